"""HTTP bearer token and PII-free logs, on a real worker."""

import json
import os
import socket
import subprocess
import sys

import pytest

from streams.core.demo import dumps
from tests.conftest import Cluster, wait_until

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_token_is_required_and_logs_carry_no_pii(broker, tmp_path):
    cluster = Cluster(broker, tmp_path, env={"RECSTREAM_API_TOKEN": TOKEN, "RECSTREAM_HTTP_IDLE_TIMEOUT_S": "2"})
    try:
        worker = cluster.start_worker()
        assert worker.get("/health")[0] == 200  # probes stay open
        # a client that sends nothing or half a request head is let go (held an hour: ~20,000 of them used up
        # the worker's file descriptors, and every client was refused)
        silent, stalled = (socket.create_connection(("127.0.0.1", worker.web_port), timeout=10) for _ in range(2))
        stalled.sendall(b"GET /recommendations/u1 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for conn in (silent, stalled):
            with conn:
                try:
                    assert conn.recv(1024) == b""  # closed by the worker within its idle timeout
                except ConnectionResetError:
                    pass
        for path in ("/recommendations/u1", "/users/u1/affinity", "/metrics", "/images/c1?merchants=m"):
            assert worker.get(path)[0] == 401, path
            assert worker.get(path, headers={"Authorization": "Bearer wrong"})[0] == 401, path
        assert worker.get("/recommendations/u1", headers=AUTH)[0] == 200
        for scheme in ("bearer", "BEARER", "BeArEr"):  # the scheme is case-insensitive (RFC 7235)
            assert worker.get("/recommendations/u1", headers={"Authorization": f"{scheme} {TOKEN}"})[0] == 200
        for wrong in (TOKEN, f"Basic {TOKEN}", f"Bearer{TOKEN}", f"Bearer {TOKEN}x"):
            assert worker.get("/recommendations/u1", headers={"Authorization": wrong})[0] == 401, wrong
        assert worker.get("/metrics", headers=AUTH)[0] == 200

        pii = {"context": {"ip": "203.0.113.77"}, "traits": {"email": "jane.doe@example.com"}}
        good = {"type": "track", "event": "followedArtist", "userId": "u-pii", "messageId": "p1",
                "timestamp": "2026-11-01T00:00:00Z", "properties": {"owner_id": "a1"}, **pii}
        bad = {**good, "messageId": "p2", "properties": {}}  # dead-lettered: missing owner_id
        cluster.produce("events.segment", [(b"u-pii", dumps(good)), (b"u-pii", dumps(bad))])

        def dead_letters():
            status, body = worker.get("/metrics", headers=AUTH)
            return status == 200 and b'recstream_dead_letters_total{reason="missing_property"} 1' in body
        wait_until(dead_letters, 30, what="dead letter")
        log = (tmp_path / "w0.log").read_text()
        assert "dead letter: reason=missing_property" in log  # ids and reasons are logged...
        assert "jane.doe@example.com" not in log and "203.0.113.77" not in log  # ...never PII
        # a producer's flood of bad events: a few lines a reason, not one each (10,240 in one request were
        # 10,241 WARNING lines); every one is still counted and on the dead-letter topic
        flood = [(b"u-flood", dumps({**good, "messageId": f"f{i}", "event": "noSuchEvent"})) for i in range(300)]
        cluster.produce("events.segment", flood)
        flooded = b'recstream_dead_letters_total{reason="unmapped_event"} 300'
        wait_until(lambda: flooded in worker.get("/metrics", headers=AUTH)[1], 30, what="the flood dead-lettered")
        assert (tmp_path / "w0.log").read_text().count("dead letter: reason=unmapped_event") <= 5
        status, body = wait_until(lambda: (lambda r: r if r[0] == 200 else None)(
            worker.get("/users/u-pii/affinity", headers=AUTH)), 30, what="the good event applied")
        assert json.loads(body)["artists"][0]["artist_id"] == "a1"

        def report(token: str) -> subprocess.CompletedProcess:  # the CLI sends the token it is given (it did not)
            env = {**os.environ, **cluster.env, "RECSTREAM_API_TOKEN": token}
            return subprocess.run([sys.executable, "-m", "streams.cli", "experiments", "report", "--worker",
                                   worker.base_url.removeprefix("http://")], env=env, capture_output=True,
                                  text=True, timeout=60)
        assert report(TOKEN).returncode == 0 and "experiment recs" in report(TOKEN).stdout
        refused = report("wrong")
        assert refused.returncode == 2 and "HTTP 401" in refused.stderr and "RECSTREAM_API_TOKEN" in refused.stderr
    finally:
        cluster.stop()


def test_a_token_that_is_not_ascii_is_a_401_not_a_traceback(broker, tmp_path):
    """Fuzzing: aiohttp keeps a header's non-UTF-8 bytes as surrogates, and encoding them to compare
    with the token raised: a 500 and a traceback in the log for any client."""
    import socket

    cluster = Cluster(broker, tmp_path, env={"RECSTREAM_API_TOKEN": TOKEN})
    try:
        worker = cluster.start_worker()

        def status(authorization: bytes) -> bytes:
            request = b"GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: " + authorization + b"\r\nConnection: close\r\n\r\n"
            with socket.create_connection(("127.0.0.1", worker.web_port), timeout=10) as s:
                s.sendall(request)
                return s.recv(4096).split(b" ", 2)[1]

        for given in (b"Bearer \xff\xfe", b"Bearer " + TOKEN.encode() + b"\xe9", "Bearer é".encode()):
            assert status(given) == b"401", given
        assert status(b"Bearer " + TOKEN.encode()) == b"200"
        log = (tmp_path / "w0.log").read_text()
        assert "Error handling request" not in log and "Traceback" not in log, log[-3000:]
    finally:
        cluster.stop()
