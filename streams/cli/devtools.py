"""Developer commands (broker; dev in streams.cli.dev) and the worker-process handle that
``recstream dev``, the integration tests and the benchmarks share."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from streams.core.settings import Settings
from streams.kafka.broker import BrokerError, EmbeddedBroker, _die_with_parent, free_port

# The worker runs the code of the process starting it: `python -m streams.cli` puts the working directory first on
# sys.path, so an A/B benchmark run from one checkout with PYTHONPATH naming another ran the first one's workers.
_RUN_THIS_CODE = (f"import runpy, sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r}); "
                  "runpy.run_module('streams.cli', run_name='__main__', alter_sys=True)")


class WorkerProcess:
    """A ``recstream worker`` subprocess with its own data dir and web port."""

    def __init__(self, broker_url: str, data_dir: str, env: dict | None = None,
                 web_port: int | None = None, log_path: Path | None = None):
        self.web_port = web_port or free_port()
        self.env = {**os.environ, **(env or {}), "RECSTREAM_BROKER_URL": broker_url,
                    "RECSTREAM_DATA_DIR": data_dir, "RECSTREAM_WEB_PORT": str(self.web_port),
                    "RECSTREAM_WEB_HOST": "127.0.0.1"}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> WorkerProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        level = Settings.from_env({"RECSTREAM_LOG_LEVEL": self.env.get("RECSTREAM_LOG_LEVEL", "info")}).log_level
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _RUN_THIS_CODE, "worker", "-l", level],
            stdout=out, stderr=subprocess.STDOUT, env=self.env, preexec_fn=_die_with_parent)
        return self

    def get(self, path: str, timeout: float = 5.0, headers: dict | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base_url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def wait_ready(self, timeout: float = 90.0, min_partitions: int = 1) -> dict:
        """Until /health says recovered with partitions assigned, from this process (another worker on the port:
        `recstream dev` ran its demo against a live deployment, an outside check). Raises on timeout or exit."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with code {self.proc.returncode}; log: {self.log_path}")
            try:
                status, body = self.get("/health", timeout=2)
                last = json.loads(body)
                if (status == 200 and last["assigned_partitions"] >= min_partitions and not last["rebalancing"]
                        and last.get("pid") == self.proc.pid):
                    return last
            except (OSError, ValueError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"worker not ready after {timeout}s (last health: {last}); log: {self.log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def pace(sent: int, rate: float, started: float) -> None:
    """Hold a sender to `rate` messages/s (0: no limit); checks every 50 messages."""
    if rate > 0 and sent % 50 == 0:
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)


async def produce(bootstrap: str, topic: str, records, *, rate: float = 0.0,
                  linger_ms: int = 5, compression: str | None = None) -> int:
    """Send (key, value) pairs with aiokafka; `rate` > 0 caps messages/s; `compression`: gzip,
    snappy, lz4 or zstd batches. Returns the count."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms, compression_type=compression)
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        for key, value in records:
            await producer.send(topic, value=value, key=key)
            sent += 1
            await pace(sent, rate, started)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def segment_key(event: dict) -> bytes | None:
    """Key Segment events by user (or anonymous) id so one user's events stay in order."""
    user = event.get("userId") or event.get("anonymousId")
    return user.encode() if isinstance(user, str) else None


# --- commands -----------------------------------------------------------------------------


def cmd_broker(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="recstream broker", description="Run the embedded broker.")
    parser.add_argument("--port", type=int, default=9092, help="the port to listen on, on 127.0.0.1 (default 9092)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be a TCP port (0 to 65535), got {args.port}")
    try:
        broker = EmbeddedBroker(port=args.port).start()
    except BrokerError as exc:
        print(f"recstream broker: {exc}", file=sys.stderr)
        return 2
    print(f"embedded broker on {broker.url} (memory storage: a restart starts empty); Ctrl-C to stop", flush=True)
    try:
        broker.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0
