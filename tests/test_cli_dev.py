"""`recstream dev` as a user runs it: `--duration 0` runs until Ctrl-C (or SIGTERM), after the
demo events too, then stops the worker and the broker and removes its temporary folder; `--keep`
keeps the folder. Each run starts the real embedded broker and a real worker."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

RECSTREAM = str(Path(sys.executable).with_name("recstream"))


def start_dev(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, queue.Queue, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    proc = subprocess.Popen(
        [RECSTREAM, "dev", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "TMPDIR": str(tmp_path)},
    )
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            seen.append(line.rstrip("\n"))
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return proc, lines, seen


def wait_for(lines: queue.Queue, pattern: str, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                pytest.fail(
                    f"dev exited ({proc.returncode}) before {pattern!r}: {proc.stderr.read()}"
                )
            continue
        if re.search(pattern, line):
            return line
    pytest.fail(f"no line matching {pattern!r} within {timeout}s")


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_dev_duration_0_runs_until_stopped_then_cleans_up(tmp_path, stop):
    proc, lines, seen = start_dev(
        tmp_path, "--duration", "0", "--users", "30", "--events", "300", "--rate", "1000"
    )
    try:
        started = wait_for(lines, r"^\[dev\] worker starting", proc, 60)
        health = re.search(r"http: (http://\S+)\)", started).group(1) + "/health"
        (workdir,) = tmp_path.glob("recstream-dev-*")
        assert (workdir / "worker.log").exists()
        wait_for(lines, r"^\[recs\] ", proc, 120)
        wait_for(lines, r"^\[dev\] all 300 events sent$", proc, 60)
        wait_for(lines, r"^\[dev\] experiment readout", proc, 90)  # visitors act on their lists by variant
        wait_for(lines, r"^(B|A \(control\)) wins|^no winner yet", proc, 30)
        wait_for(lines, r"^\[dev\] running until Ctrl-C$", proc, 30)
        time.sleep(4)
        assert proc.poll() is None, "dev --duration 0 exited by itself after the events"
        assert answers(health)
        proc.send_signal(stop)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr, stderr
    time.sleep(0.5)  # the reader thread has the last lines
    assert seen[-1] == "[dev] stopped" and any(
        re.match(r"\[dev\] \d+ affinity updates", s) for s in seen
    )
    assert not workdir.exists() and not list(tmp_path.glob("recstream-dev-*"))
    assert not answers(health)  # the worker is gone too


def test_dev_with_a_duration_ends_by_itself_and_keep_keeps_the_folder(tmp_path):
    proc, lines, seen = start_dev(
        tmp_path, "--duration", "3", "--keep", "--users", "20", "--events", "100", "--rate", "1000"
    )
    try:
        assert proc.wait(180) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    time.sleep(0.5)
    (workdir,) = tmp_path.glob("recstream-dev-*")
    try:
        assert f"[dev] kept {workdir} (worker.log, state)" in seen
        assert any(s.startswith("[dev] GET /recommendations/u0 -> 200") for s in seen)
        assert "[dev] experiment readout (GET /experiments, `recstream experiments report`):" in seen
        assert any(s.startswith("sample ratio: chi2 =") for s in seen)
        assert (workdir / "worker.log").stat().st_size > 0 and (workdir / "state").is_dir()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_dev_whose_worker_cannot_start_says_why_and_removes_its_folder(tmp_path):
    """The port is a live worker's (it answers /health as one): dev ran its whole demo against that deployment
    and wrote 401 users into its experiment (an outside check); its own worker had exited."""
    import http.server
    import threading

    asked = []

    class LiveWorker(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            asked.append(self.path)
            body = json.dumps({"status": "ok", "recovered": True, "assigned_partitions": 4, "partitions": [0, 1, 2, 3],
                               "rebalancing": False, "pid": 1}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    live = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LiveWorker)
    threading.Thread(target=live.serve_forever, daemon=True).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
        result = subprocess.run(
            [RECSTREAM, "dev", "--users", "10", "--events", "10"],
            capture_output=True,
            text=True,
            timeout=180,
            env={**env, "TMPDIR": str(tmp_path), "RECSTREAM_WEB_PORT": str(live.server_address[1])},
        )
    finally:
        live.shutdown()
        live.server_close()
    assert set(asked) <= {"/health"}, asked  # nothing read from, or written to, the live worker
    assert "[dev] worker ready" not in result.stdout, result.stdout
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(
        "recstream dev: worker exited with code 2; from its log (--keep keeps it):"
    )
    assert "cannot serve HTTP on 127.0.0.1" in result.stderr and "Address already in use" in result.stderr
    assert not list(tmp_path.glob("recstream-dev-*"))


def test_dev_on_an_existing_cluster_touches_nothing_of_a_deployment_there(tmp_path):
    """A newcomer's check: `RECSTREAM_BROKER_URL=<a deployment's cluster> recstream dev` joined the
    deployment's consumer group, overwrote its catalog records and sent demo events for its users."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    from streams.cli.devtools import produce
    from streams.kafka.broker import EmbeddedBroker

    async def topics_and_groups(bootstrap: str) -> tuple[set[str], set[str]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics()), {g[0] for g in await admin.list_consumer_groups()}
        finally:
            await admin.close()

    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        deployed = [(b"w5", b'{"id": "w5", "artist_id": "the-real-artist"}')]
        asyncio.run(produce(broker.bootstrap, "catalog.artworks", deployed))
        asyncio.run(produce(broker.bootstrap, "events.segment", [(b"u0", b'{"type": "track"}')]))
        before = asyncio.run(topics_and_groups(broker.bootstrap))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
        result = subprocess.run(
            [RECSTREAM, "dev", "--duration", "3", "--users", "10", "--events", "50", "--rate", "0"],
            capture_output=True, text=True, timeout=240,
            env={**env, "TMPDIR": str(tmp_path), "RECSTREAM_BROKER_URL": broker.url})
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        prefix = re.search(r"under the topic prefix '(dev-[0-9a-f]{8}\.)'", result.stdout).group(1)
        assert any(line.startswith("[recs]") for line in result.stdout.splitlines())  # the demo ran
        assert "[dev] deleted its" in result.stdout and f"({prefix}*)" in result.stdout, result.stdout
        topics, groups = asyncio.run(topics_and_groups(broker.bootstrap))
        assert not [t for t in topics if t.startswith(prefix)]  # its own topics are gone
        assert topics == before[0] and not (groups - before[1]) - {g for g in groups if g.startswith(prefix)}
        catalog = asyncio.run(consume(broker.bootstrap, "catalog.artworks"))
        events = asyncio.run(consume(broker.bootstrap, "events.segment"))
    assert [(r.key, r.value) for r in catalog] == deployed and len(events) == 1


async def consume(bootstrap: str, topic: str) -> list:
    from tests.conftest import consume_all

    return await consume_all(bootstrap, topic, idle_ms=1000, timeout=30)


def test_a_worker_process_runs_the_code_of_the_process_that_starts_it_whatever_the_directory(tmp_path, monkeypatch):
    """`python -m streams.cli` put the working directory first on sys.path: an A/B benchmark run from one checkout
    with PYTHONPATH naming another ran the first checkout's workers. A decoy package in the working directory must
    not be what the worker runs."""
    import streams
    from streams.cli.devtools import WorkerProcess

    decoy = tmp_path / "streams" / "cli"
    decoy.mkdir(parents=True)
    for init in (tmp_path / "streams" / "__init__.py", decoy / "__init__.py"):
        init.write_text("")
    (decoy / "__main__.py").write_text("import sys, streams\nprint('decoy ran', streams.__file__)\nsys.exit(3)\n")
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "worker.log"
    worker = WorkerProcess("kafka://127.0.0.1:1", str(tmp_path / "state"), log_path=log,
                           env={"RECSTREAM_LOG_LEVEL": "info"}).start()
    try:
        worker.proc.wait(timeout=8)  # the real worker keeps trying an unreachable broker; the decoy exits at once
    except subprocess.TimeoutExpired:
        pass
    finally:
        worker.stop()
    assert "decoy ran" not in log.read_text() and log.read_text().strip(), log.read_text()[-2000:]
    assert streams.__file__.startswith(str(Path(__file__).resolve().parents[1]))  # this checkout's code ran the test
