"""A worker that cannot start says why in one line and exits 2, in bounded time (an outside fuzzer:
a refused broker, a port in use or a host this machine lacks ended in faust's tracebacks and exit 1;
a broker that accepted connections and never answered held the worker for good; `worker --help`
created 24 topics first)."""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest


def start(tmp_path, *args, **env) -> tuple[subprocess.CompletedProcess, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "streams.cli", "worker", "-l", "info", *args], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path,
                            env={**clean, "RECSTREAM_DATA_DIR": str(tmp_path / "state"), **env})
    return result, time.monotonic() - started


def said_once(result: subprocess.CompletedProcess, *words: str) -> str:
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stdout + result.stderr
    assert lines[0].startswith("recstream worker: ") and all(w in lines[0] for w in words), lines[0]
    return lines[0]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_refused_broker_is_one_line_and_exit_2(tmp_path):
    port = closed_port()
    result, _ = start(tmp_path, RECSTREAM_BROKER_URL=f"kafka://127.0.0.1:{port}")
    said_once(result, f"cannot create its topics on the broker at kafka://127.0.0.1:{port}", "RECSTREAM_BROKER_URL")


def test_a_broker_that_accepts_and_never_answers_stops_the_worker_in_bounded_time(tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    held = []

    def accept():
        while True:
            try:
                held.append(silent.accept()[0])
            except OSError:  # closed: the test is over
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        result, took = start(tmp_path, RECSTREAM_BROKER_URL=f"kafka://127.0.0.1:{silent.getsockname()[1]}")
    finally:
        silent.close()
        for connection in held:
            connection.close()
    said_once(result, "cannot create its topics")
    assert held and took < 90  # it did connect; the old worker was still waiting at 150 s


@pytest.mark.parametrize("host, why", [("nonexistent.invalid", "cannot serve HTTP on nonexistent.invalid"),
                                       ("8.8.8.8", "cannot serve HTTP on 8.8.8.8")])
def test_an_http_host_this_machine_lacks_is_one_line_and_exit_2(tmp_path, host, why):
    said_once(start(tmp_path, RECSTREAM_WEB_HOST=host, RECSTREAM_BROKER_URL=f"kafka://127.0.0.1:{closed_port()}")[0],
              why, "RECSTREAM_WEB_HOST")


def test_no_broker_url_is_one_line_and_exit_2_and_leaves_no_data_folder(tmp_path):
    """load, replay and emit-all refused an unset RECSTREAM_BROKER_URL while the worker silently tried
    127.0.0.1:9092 (a newcomer); `worker --help` and a failed start made ./data (docs: touches nothing)."""
    said_once(start(tmp_path)[0], "RECSTREAM_BROKER_URL is not set")
    assert not (tmp_path / "state").exists()


def test_an_http_port_in_use_is_one_line_and_exit_2_before_any_broker_work(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result, _ = start(tmp_path, RECSTREAM_WEB_PORT=str(port), RECSTREAM_BROKER_URL=f"kafka://127.0.0.1:{closed_port()}")
    said_once(result, f"cannot serve HTTP on 127.0.0.1:{port}", "in use")


def test_the_port_given_with_p_is_the_one_checked(tmp_path):
    """A newcomer's check: `worker -p <port in use>` was refused for RECSTREAM_WEB_PORT's port instead."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for option in (["-p", str(port)], [f"--web-port={port}"]):
            result, _ = start(tmp_path, *option, RECSTREAM_WEB_PORT=str(closed_port()),
                              RECSTREAM_BROKER_URL=f"kafka://127.0.0.1:{closed_port()}")
            said_once(result, f"cannot serve HTTP on 127.0.0.1:{port}", "in use")


def test_worker_help_prints_help_without_touching_the_broker(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    result = subprocess.run([sys.executable, "-m", "streams.cli", "worker", "--help"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path,
                            env={**clean, "RECSTREAM_BROKER_URL": f"kafka://127.0.0.1:{closed_port()}",
                                 "RECSTREAM_DATA_DIR": str(tmp_path / "state")})
    assert result.returncode == 0 and result.stdout.startswith("Usage: "), result.stdout + result.stderr
    assert "topics" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "state").exists()


def test_a_misspelt_setting_is_warned_of_once_with_its_likely_name(tmp_path):
    """A misspelt RECSTREAM_* variable was ignored without a word (a newcomer): its default ran."""
    result, _ = start(tmp_path, RECSTREAM_PARTITONS="8")
    lines = result.stderr.strip().splitlines()
    warned = [line for line in lines if "RECSTREAM_PARTITONS" in line]
    assert warned == ["recstream: warning: RECSTREAM_PARTITONS is not a setting (RECSTREAM_PARTITIONS?); ignored"], lines
    assert result.returncode == 2 and lines[-1].startswith("recstream worker: RECSTREAM_BROKER_URL is not set"), lines
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    config = subprocess.run([sys.executable, "-m", "streams.cli", "config"], capture_output=True, text=True, timeout=60,
                            env={**clean, "RECSTREAM_PARTITONS": "8", "RECSTREAM_REBUILD": "1"})
    assert config.returncode == 0 and "RECSTREAM_PARTITIONS=4" in config.stdout, config.stdout  # still the default
    assert config.stderr.strip().splitlines() == warned, config.stderr  # RECSTREAM_REBUILD: the rebuild's own


def test_a_second_worker_on_one_data_dir_is_one_line_and_exit_2_before_any_broker_work(tmp_path):
    """An outside check: it waited 40 s on the RocksDB locks while the group rebalanced (the live worker answered
    503 to every user), then crashed with a traceback; the default data dir, `data`, is relative."""
    import fcntl

    (tmp_path / "state").mkdir()
    with open(tmp_path / "state" / ".recstream.lock", "w") as live:  # the live worker's lock (app id recstream)
        fcntl.flock(live, fcntl.LOCK_EX | fcntl.LOCK_NB)
        live.write("4242")
        live.flush()
        result, _ = start(tmp_path, RECSTREAM_BROKER_URL=f"kafka://127.0.0.1:{closed_port()}")
        said_once(result, f"another worker (pid 4242) uses {tmp_path / 'state'} for app id 'recstream'",
                  "RECSTREAM_DATA_DIR")
        other_app, _ = start(tmp_path, RECSTREAM_APP_ID="other", RECSTREAM_BROKER_URL=f"kafka://127.0.0.1:{closed_port()}")
        said_once(other_app, "cannot create its topics")  # another app id's state is apart: only the broker stops it


def test_a_worker_on_fausts_path_warns_that_a_kill_9_can_lose_events(tmp_path):
    """An outside check: 4 of 14 runs with kill -9s on RECSTREAM_DIRECT_INGEST=false lost events for good (faust's
    consumer drops re-fetched records), with no dead letter and no log line saying so."""
    result, _ = start(tmp_path, RECSTREAM_DIRECT_INGEST="false")
    warned = [line for line in result.stderr.splitlines() if "RECSTREAM_DIRECT_INGEST=false" in line]
    assert len(warned) == 1 and "a kill -9 then loses events for good" in warned[0], result.stderr
    assert "RECSTREAM_DIRECT_INGEST" not in start(tmp_path)[0].stderr  # the default says nothing
