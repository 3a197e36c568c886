import gzip
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from streams.core.demo import DemoGenerator

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_demo_events_is_seeded_jsonl():
    end = ["--end", "2026-10-31T00:00:00Z"]
    out = run("demo-events", "--users", "20", "--events", "50", "--seed", "3", *end)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 50
    assert lines == list(DemoGenerator(users=20, seed=3, end_time=datetime(2026, 10, 31, tzinfo=timezone.utc)).events(50))
    assert run("demo-events", "--users", "20", "--events", "50", "--seed", "3", *end).stdout == out.stdout
    assert "neither now nor an ISO 8601 time" in run("demo-events", "--end", "yesterday").stderr


def test_demo_data_ends_now_by_default_so_a_live_worker_finds_its_works_recent():
    """docs/operations.md's recipe loaded works dated from a fixed October: against a worker's clock
    they had left the personal lists' 30-day window, and users got curated and latest works only
    (an outside fuzzer)."""
    now = datetime.now(timezone.utc).timestamp()
    events = [json.loads(line) for line in run("demo-events", "--users", "20", "--events", "50").stdout.splitlines()]
    works = [json.loads(line) for line in run("demo-events", "--catalog", "--artworks", "200").stdout.splitlines()]
    times = lambda rows, key: [datetime.fromisoformat(r[key].replace("Z", "+00:00")).timestamp() for r in rows]  # noqa: E731
    assert now - 86400 < max(times(events, "timestamp")) <= now + 60
    published = times(works, "published_at")
    assert max(published) <= now + 60 and sum(now - t < 30 * 86400 for t in published) > len(works) / 3


def test_demo_catalog():
    out = run("demo-events", "--catalog", "--artworks", "30")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 30 and {"id", "artist_id", "published_at", "availability", "is_merch"} <= rows[0].keys()


def test_config_lists_every_setting_and_rejects_bad_values():
    out = run("config")
    assert out.returncode == 0 and "RECSTREAM_HALF_LIFE_DAYS=30.0" in out.stdout
    assert "(default: 30.0)" in out.stdout and not [line for line in out.stdout.splitlines()
                                                   if line.count("(default: ") > 1]  # said once (a newcomer)
    bad = subprocess.run([sys.executable, "-m", "streams.cli", "config"], capture_output=True, text=True,
                         env={"RECSTREAM_PARTITIONS": "x", "PATH": ""}, timeout=60)
    assert bad.returncode != 0 and "RECSTREAM_PARTITIONS='x' is not a valid int" in bad.stderr


def test_simulate_multiplier_prints_a_table_and_writes_a_png(tmp_path):
    out = tmp_path / "m.png"
    res = run("simulate-multiplier", "--demo-merchants", "12", "--views", "6", "--multipliers", "0,0.05", "--out", str(out))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[1].split() == ["views", "C=0", "C=0.05"]
    rows = [line.split() for line in lines[2:8]]
    assert [r[0] for r in rows] == [str(x) for x in range(1, 7)]
    assert all(r[1] == "0.0%" for r in rows)  # C = 0 never changes
    c05 = [float(r[2].rstrip("%")) for r in rows]
    assert c05 == sorted(c05) and c05[-1] > 0  # cumulative, and exploration does change images
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bare = run("simulate-multiplier", "--demo-merchants", "4", "--views", "2", "--out", str(tmp_path / "plot"))
    assert f"plot: {tmp_path / 'plot.png'}" in bare.stdout and (tmp_path / "plot.png").exists()  # the file written


def test_simulate_multiplier_from_replay_files(tmp_path):
    from streams.core.demo import DemoImages, dumps
    demo = DemoImages(merchants=5)
    events, catalog = tmp_path / "e.jsonl", tmp_path / "c.jsonl"
    events.write_bytes(b"\n".join(dumps(e) for e in demo.events(2000)) + b"\nnot json\n")
    catalog.write_bytes(b"\n".join(dumps(c) for c in demo.catalog()))
    res = run("simulate-multiplier", "--events", str(events), "--catalog", str(catalog), "--out", str(tmp_path / "p.png"))
    assert res.returncode == 0, res.stderr
    assert "share of 5 merchants" in res.stdout and "skipped 1 lines" in res.stderr
    for args in (["--multipliers", "a,b"], ["--multipliers", "nan"], ["--multipliers", "0.1,-1"], ["--multipliers", "inf"]):
        bad = run("simulate-multiplier", *args)
        assert bad.returncode == 2 and "comma-separated finite numbers >= 0" in bad.stderr, args
    bad = run("simulate-multiplier", "--views", "-5")
    assert bad.returncode == 2 and "--views and --demo-merchants must be at least 1" in bad.stderr


def test_a_worker_reexecutes_itself_with_the_configured_python_allocator(monkeypatch):
    import os

    from streams.cli import main as cli

    calls = []
    monkeypatch.setattr(os, "execve", lambda path, args, env: calls.append((args, env.get("PYTHONMALLOC"))))
    monkeypatch.delenv("PYTHONMALLOC", raising=False)
    monkeypatch.setenv("RECSTREAM_PYTHON_MALLOC", "malloc")
    cli._reexec_with_allocator(["worker", "-l", "info"])
    assert calls == [([sys.executable, "-m", "streams.cli", "worker", "-l", "info"], "malloc")]
    monkeypatch.setenv("PYTHONMALLOC", "malloc")  # already running with it: no loop
    cli._reexec_with_allocator(["worker"])
    assert len(calls) == 1
    monkeypatch.setenv("RECSTREAM_PYTHON_MALLOC", "pymalloc")  # CPython's own, chosen explicitly
    cli._reexec_with_allocator(["worker"])
    assert calls[-1] == ([sys.executable, "-m", "streams.cli", "worker"], "pymalloc")
    monkeypatch.delenv("RECSTREAM_PYTHON_MALLOC")  # the default is pymalloc: unset PYTHONMALLOC runs it already
    monkeypatch.delenv("PYTHONMALLOC")
    cli._reexec_with_allocator(["worker"])
    assert len(calls) == 2


def test_the_reexecuted_worker_command_runs():
    env = {**__import__("os").environ, "RECSTREAM_PYTHON_MALLOC": "malloc"}
    env.pop("PYTHONMALLOC", None)
    result = subprocess.run([sys.executable, "-m", "streams.cli", "worker", "--help"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0 and "worker" in result.stdout.lower(), result.stderr


@pytest.mark.parametrize("command,name,value", [
    ("config", "WEIGHTS", "view=nan"),
    ("worker", "HALF_LIFE_DAYS", "nan"),
    ("config", "MAX_EVENT_BYTES", "-1"),
    ("worker", "BATCH_MAX", "0"),
    ("config", "BATCH_WITHIN_MS", "-5"),
    ("dev", "SESSION_TIMEOUT", "0"),
    ("worker", "KAFKA_SASL_MECHANISM", "MD5"),
    ("config", "IMAGE_PRIOR_STRENGTH", "-20"),
    ("replay", "VARIANTS", "{oops"),
    ("rebuild", "EVENT_MAP", "[1]"),
    ("worker", "IMAGE_VARIANTS", "not json"),
    ("demo-events", "PARTITIONS", "0"),
    ("simulate-multiplier", "ROCKSDB_CACHE_MB", "-1"),
    ("emit-all", "WEB_PORT", "70000"),
    ("load", "BROKER_URL", "kafka://127.0.0.1:notaport"),  # fuzzing: these three were tracebacks (ValueError,
    ("worker", "BROKER_URL", "kafka://[bad"),  # OverflowError) when the first client connected
    ("replay", "BROKER_URL", "kafka://127.0.0.1:99999"),
    ("config", "BROKER_URL", "http://127.0.0.1:39092"),
    ("config", "PARTITIONS", "99999999999999999999999"),  # fuzzing: passed; the worker died on struct.error  # fuzzing: passed; the worker's faust died on the scheme
])
def test_a_bad_setting_stops_any_command_with_one_line_and_exit_code_2(command, name, value):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    result = subprocess.run([sys.executable, "-m", "streams.cli", command], capture_output=True, text=True,
                            env={**env, f"RECSTREAM_{name}": value}, cwd=ROOT, timeout=60)
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"recstream: RECSTREAM_{name}"), result.stderr
    assert "Traceback" not in result.stderr and not result.stdout


@pytest.mark.parametrize("app_id,expected", [
    ("", "--app-id must be 1 to 200"),  # was taken as unset: the default app id, the running one's
    ("a/b c", "--app-id must be 1 to 200"),  # was accepted: topics named with / and a space
    ("fresh-app", "the broker did not answer"),  # was a traceback (found by fuzzing)
])
def test_rebuild_refuses_a_bad_app_id_or_an_unreachable_broker_in_one_line(app_id, expected):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    result = subprocess.run([sys.executable, "-m", "streams.cli", "rebuild", "--app-id", app_id, "--bulk",
                             "--no-worker"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={**env, "RECSTREAM_BROKER_URL": "kafka://127.0.0.1:1"})
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert app_id != "fresh-app" or len(result.stderr.splitlines()) == 1, result.stderr  # aiokafka's own was a second


def test_dev_on_an_unreachable_broker_says_so_in_one_line_before_it_starts_anything(tmp_path):
    """It started a worker, which failed to create its topics: three lines from two processes, then status 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    res = subprocess.run([sys.executable, "-m", "streams.cli", "dev", "--duration", "5"], capture_output=True,
                         text=True, timeout=60,
                         env={**env, "TMPDIR": str(tmp_path), "RECSTREAM_BROKER_URL": "kafka://127.0.0.1:1"})
    lines = res.stderr.splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "the broker at kafka://127.0.0.1:1 did not answer" in lines[0]
    assert not res.stdout and not list(tmp_path.glob("recstream-dev-*")), res.stdout  # no worker, nothing left


def test_replay_and_load_files_may_open_with_a_utf8_byte_order_mark(tmp_path):
    """Editors on Windows write a BOM first; the first record used to be rejected as bad JSON."""
    from streams.cli.load import numbered_lines
    from streams.cli.ops import route_line

    line = b'{"kind":"follow","user_id":"u1","artist_id":"a1","timestamp":"2026-01-01T00:00:00Z"}'
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + line + b"\n" + line + b"\n")
    lines = [got for _, _, got, _ in numbered_lines([path], 65536)]
    assert lines == [line, line]
    assert route_line(lines[0]) == ("signals.follow", b"u1")


def test_a_line_longer_than_any_record_is_cut_as_it_is_read_not_held_whole(tmp_path):
    """An outside check: a 300 MB line was read whole before its size was checked (1.5 GB of memory);
    it comes cut to one byte over the limit, refused as oversized, and the lines after it are read."""
    from streams.cli.load import KINDS, check, numbered_lines

    path = tmp_path / "big.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'{"a": 1}\n' + b"x" * (3 << 20) + b'\n{"b": 2}\n' + b"y" * 2000)
    got = [(number, len(line)) for _, number, line, _ in numbered_lines([path], 1000)]
    assert got == [(1, 8), (2, 1001), (3, 8), (4, 1001)]
    cut = b"z" * ((1 << 20) + 1)
    assert check(KINDS["artworks"], cut).reason == "oversized"


@pytest.mark.parametrize("args,expected", [
    (["emit-all", "--users", "{tmp}/missing.txt"], "No such file or directory: {tmp}/missing.txt"),
    (["emit-all", "--users", "{tmp}"], "Is a directory: {tmp}"),
    (["emit-all", "--users", "{tmp}/latin1.txt"], "not UTF-8 text (byte 3)"),
    (["emit-all"], "the broker did not answer (KafkaConnectionError"),
    (["simulate-multiplier", "--out", "{tmp}/no/such/dir/m.png"], "No such file or directory"),
    (["simulate-multiplier", "--events", "{tmp}/events.jsonl", "--catalog", "{tmp}/deep.jsonl"],
     "the input nests too deep to read"),
    (["replay", "{tmp}/events.jsonl", "--rejects", "{tmp}/no/such/dir/r.jsonl"], "No such file or directory"),
])
def test_ops_commands_end_bad_files_and_an_unreachable_broker_in_one_line(tmp_path, args, expected):
    """Fuzzing: each of these ended in a traceback and exit status 1 (docs/operations.md: one line, status 2)."""
    (tmp_path / "latin1.txt").write_bytes(b"u1\n\xff\n")
    (tmp_path / "deep.jsonl").write_text('{"merchant_id":"m1","images":[],"x":' + "[" * 5000 + "]" * 5000 + "}\n")
    (tmp_path / "events.jsonl").write_text('{"kind":"image_impression","consumer_id":"c","merchant_id":"m1",'
                                           '"image_id":"h","timestamp":"2026-12-01T00:00:00Z"}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    result = subprocess.run([sys.executable, "-m", "streams.cli", *(a.format(tmp=tmp_path) for a in args)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={**env, "RECSTREAM_BROKER_URL": "kafka://127.0.0.1:1"})
    assert result.returncode == 2 and expected.format(tmp=tmp_path) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "Unclosed" not in result.stderr, result.stderr  # fuzzing: replay left one


def test_experiments_report_from_something_that_is_not_a_worker_says_so_in_one_line():
    """Fuzzing: a URL answering other JSON ended in KeyError: 'experiments' (a traceback)."""
    import http.server
    import threading

    class OtherJson(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"status": "OK"}')

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), OtherJson)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run("experiments", "report", "--worker", f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert result.returncode == 2 and "not an experiments readout" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_rejects_file_that_is_an_input_is_refused_before_it_is_emptied(tmp_path):
    """Fuzzing: `replay FILE --rejects FILE` opened the archive for writing first and emptied it."""
    archive = tmp_path / "events.jsonl"
    archive.write_text('{"type": "track"}\n')
    for args in (["replay", str(archive)], ["load", "artworks", str(archive)]):
        res = run(*args, "--rejects", str(tmp_path / "." / "events.jsonl"))  # the same file by another path
        assert res.returncode == 2 and "also --rejects: emptied if run" in res.stderr, args
    assert archive.read_text() == '{"type": "track"}\n'
    for rate in ("-5", "nan", "inf"):
        res = run("replay", str(archive), "--rate", rate)
        assert res.returncode == 2 and "--rate must be a finite number >= 0" in res.stderr, rate


def test_out_of_range_sizes_and_ports_get_one_line_not_a_traceback():
    """Fuzzing: `demo-events --users 0` raised ValueError from randrange, `broker --port 99999` a BrokerError."""
    for args, says in ((["demo-events", "--users", "0"], "--users, --artists, --artworks and --merchants must be"),
                       (["broker", "--port", "99999"], "--port must be a TCP port")):
        res = run(*args)
        assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr, args


@pytest.mark.parametrize("args,says", [
    (["--users", "0"], "--users must be at least 1"),  # fuzzing: a traceback from random ~10 s in, the worker running
    (["--users", "-5"], "--users must be at least 1"),
    (["--events", "-1"], "--events and --watch at least 0"),
    (["--watch", "-1"], "--events and --watch at least 0"),
    (["--rate", "-5"], "--rate must be a finite number >= 0"),  # was taken: "streaming 20000 events at -5/s"
    (["--rate", "nan"], "--rate must be a finite number >= 0"),
    (["--duration", "nan"], "--duration must be a finite number >= 0"),
])
def test_dev_checks_its_options_before_it_starts_anything(tmp_path, args, says):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    res = subprocess.run([sys.executable, "-m", "streams.cli", "dev", *args], capture_output=True, text=True,
                         timeout=20, env={**env, "TMPDIR": str(tmp_path), "RECSTREAM_BROKER_URL": "kafka://127.0.0.1:1"})
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not res.stdout and not list(tmp_path.glob("recstream-dev-*"))  # nothing started


@pytest.mark.parametrize("out,says", [
    ("{tmp}/readout.txt", "a plot is written as one of "),  # the formats named  # fuzzing: matplotlib's ValueError traceback, exit 1
    ("{tmp}", "is a directory: name a file"),  # fuzzing: wrote {tmp}.png and said "wrote {tmp}"
    ("{tmp}/no/such/dir/r.png", "No such file or directory: {tmp}/no/such/dir"),
])
@pytest.mark.parametrize("command", [["experiments", "report"], ["simulate-multiplier", "--demo-merchants", "2"]])
def test_a_plot_path_that_cannot_be_written_is_refused_before_any_work(tmp_path, command, out, says):
    res = subprocess.run([sys.executable, "-m", "streams.cli", *command, "--out", out.format(tmp=tmp_path)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "RECSTREAM_WEB_PORT": "1"})  # no worker there: the check comes first
    lines = res.stderr.splitlines()
    assert res.returncode == 2 and len(lines) == 1 and says.format(tmp=tmp_path) in lines[0], res.stderr
    assert not res.stdout and not list(tmp_path.iterdir())


def test_experiments_report_says_the_file_it_wrote(tmp_path, monkeypatch, capsys):
    """A path without a suffix is written with .png (matplotlib's rule): say that name, not the one given."""
    from streams.cli import readout

    clients = []

    async def snapshots(client, topic):
        clients.append(client)
        return [{"t": 1.0, "experiment": "recs", "variants": {"A": {"users": 10, "converted": 2}}}]

    monkeypatch.setenv("RECSTREAM_BROKER_URL", "kafka://127.0.0.1:1")
    monkeypatch.setattr(readout, "fetch", lambda worker, token="": {"experiments": []})
    monkeypatch.setattr(readout, "read_snapshots", snapshots)
    assert readout.main(["report", "--out", str(tmp_path / "plot")]) == 0
    assert (tmp_path / "plot.png").exists() and f"wrote {tmp_path / 'plot.png'} (1 snapshots)" in capsys.readouterr().out
    # the snapshots are read with the cluster's security settings (it read them with the bootstrap address alone)
    for name, value in (("PROTOCOL", "SASL_PLAINTEXT"), ("SASL_USERNAME", "u"), ("SASL_PASSWORD", "p")):
        monkeypatch.setenv(f"RECSTREAM_KAFKA_SECURITY_{name}" if name == "PROTOCOL" else f"RECSTREAM_KAFKA_{name}", value)
    assert readout.main(["report", "--out", str(tmp_path / "plot")]) == 0
    assert clients[-1]["security_protocol"] == "SASL_PLAINTEXT" and clients[-1]["sasl_plain_username"] == "u"


@pytest.mark.parametrize("args,says", [
    # fuzzing: no output in 60 s (hours of work before the first event), a MemoryError traceback, 60 s for a --catalog
    (["demo-events", "--users", "100000000", "--events", "1"], "--users, --artists and --artworks must be at most"),
    (["demo-events", "--users", "99999999999999999999"], "--users, --artists and --artworks must be at most"),
    (["demo-events", "--artists", "100000000"], "--users, --artists and --artworks must be at most"),
    (["demo-events", "--artworks", "100000000", "--catalog"], "--users, --artists and --artworks must be at most"),
    (["demo-events", "--images", "--merchants", "10000000"], "--merchants at most"),
    (["dev", "--users", "100000000"], "--users must be at most 200,000"),  # 5 artworks each
    (["dev", "--users", "10", "--watch", "1000000000"], "--watch at most --users"),
])
def test_demo_sizes_past_their_bounds_are_refused_at_once(tmp_path, args, says):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    res = subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, timeout=20,
                         env={**env, "TMPDIR": str(tmp_path), "RECSTREAM_BROKER_URL": "kafka://127.0.0.1:1"})
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not res.stdout


def test_demo_sizes_at_their_bounds_start_within_seconds():
    from streams.core.demo import MAX_ARTISTS, MAX_ARTWORKS, MAX_USERS
    res = subprocess.run([sys.executable, "-m", "streams.cli", "demo-events", "--users", str(MAX_USERS), "--artists",
                          str(MAX_ARTISTS), "--artworks", str(MAX_ARTWORKS), "--events", "1"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 1, res.stderr


def test_version_is_recstreams():
    """A newcomer's check: `recstream --version` answered faust's "version Faust 0.15.3"."""
    result = subprocess.run([sys.executable, "-m", "streams.cli", "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("recstream 0.1.0 (faust-streaming "), result


def test_a_commands_kafka_client_retries_are_logged_once_per_window_not_each_time():
    """`replay` with its broker gone printed ~3,000 lines of aiokafka's three retry errors (an outside check)."""
    script = ("import logging\n"
              "from streams.cli.common import quiet_client_retries\n"
              "quiet_client_retries()\n"
              "for _ in range(500):\n"
              "    logging.getLogger('aiokafka.conn').error('Unable connect to node with id %s', 111)\n"
              "logging.getLogger('aiokafka').info('Discovered coordinator')\n"
              "logging.getLogger('streams.cli').warning('a warning of our own')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.stderr.splitlines() == ["Unable connect to node with id 111", "a warning of our own"], result.stderr


def test_ctrl_c_cancels_a_commands_coroutine_from_the_event_loop_and_its_cleanup_runs():
    """A CI run: asyncio.run's own SIGINT handler cancels the command from a signal handler, between any two
    bytecodes, once between an aiokafka response future's done() check and its set_result (an InvalidStateError
    traceback at a bulk rebuild's Ctrl-C). The handler is the loop's now; the command still ends as Ctrl-C does."""
    code = """if True:
        import asyncio, os, signal, sys
        from streams.cli.common import interruptible

        async def work():
            print(signal.getsignal(signal.SIGINT).__name__, flush=True)  # the loop's (it only wakes the loop)
            try:
                asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGINT)
                await asyncio.sleep(30)
            finally:
                await asyncio.sleep(0.05)
                print("cleaned up", flush=True)

        try:
            asyncio.run(interruptible(work()))
        except KeyboardInterrupt:
            print("interrupted")
            sys.exit(130)
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 130 and result.stdout.splitlines() == ["_sighandler_noop", "cleaned up", "interrupted"], (
        result.stdout + result.stderr)
