"""Shared benchmark helpers: broker, pre-loaded topics, worker processes, timing."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from streams.cli.devtools import WorkerProcess, produce, segment_key
from streams.core.demo import DemoGenerator, dumps
from streams.kafka.broker import EmbeddedBroker, _die_with_parent, free_port

HERE = Path(__file__).parent


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}"


def demo_events(n: int, users: int = 5000, seed: int = 3):
    from datetime import datetime, timezone
    demo = DemoGenerator(users=users, artists=max(50, users // 20), artworks=max(500, users // 2), seed=seed,
                         end_time=datetime.now(timezone.utc))
    return demo, [(segment_key(e), dumps(e)) for e in demo.events(n)]


def preload(bootstrap: str, topic: str, records) -> None:
    asyncio.run(produce(bootstrap, topic, records, linger_ms=20))


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def wait_for(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("benchmark wait timed out")


def start_baseline(broker: EmbeddedBroker, mode: str, topic_in: str, run: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "BENCH_MODE": mode, "BENCH_BROKER": broker.url, "BENCH_PORT": str(port),
           "BENCH_IN": topic_in, "BENCH_OUT": f"{topic_in}-out-{run}", "BENCH_RUN": run}
    proc = subprocess.Popen([sys.executable, str(HERE / "faust_baseline_app.py"), "worker", "-l", "warn"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    return proc, port


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def rss_split_mb(pid: int) -> dict[str, float]:
    """Resident memory by kind (/proc smaps_rollup): anonymous (heaps, mmapped allocations) and
    file-backed (code, shared libraries, mapped files)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        kb = {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in f) if v.strip().endswith("kB")}
    return {"anon": kb["Anonymous"] / 1024, "file": (kb["Rss"] - kb["Anonymous"]) / 1024}


def metric(worker: WorkerProcess, name: str, missing: float = 0.0) -> float:
    """A metric summed over its labels, or one labelled series (`name{kind="cache"}`);
    `missing` when the worker exports none."""
    status, body = worker.get("/metrics")
    total, found = 0.0, False
    for line in body.decode().splitlines():
        series, _, value = line.rpartition(" ")
        if series == name or series.split("{", 1)[0] == name:
            total += float(value)
            found = True
    return total if found else missing


def processed(worker: WorkerProcess) -> float:
    """Signals the worker's pipeline has taken in: applied, or recognised as duplicates."""
    return metric(worker, "recstream_signals_applied_total") + metric(worker, "recstream_duplicates_total")


def recstream_worker(broker: EmbeddedBroker, prefix: str, app_id: str, extra: dict | None = None) -> WorkerProcess:
    tmp = Path(tempfile.mkdtemp(prefix="recstream-bench-"))
    env = {"RECSTREAM_TOPIC_PREFIX": prefix, "RECSTREAM_APP_ID": app_id, "RECSTREAM_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "warn"),
           "RECSTREAM_SESSION_TIMEOUT": "6", **(extra or {})}
    env.update({k: v for k, v in os.environ.items() if k.startswith("RECSTREAM_")})  # knobs to try
    return WorkerProcess(broker.url, str(tmp / "state"), env=env, log_path=tmp / "worker.log").start()


def pipeline_with_catalog(broker: EmbeddedBroker, prefix: str, app_id: str, demo) -> WorkerProcess:
    """A ready recstream worker whose catalog holds the demo artworks."""
    worker = recstream_worker(broker, prefix, app_id)
    worker.wait_ready()
    catalog = demo.artworks()
    preload(broker.bootstrap, f"{prefix}catalog.artworks", [(a["id"].encode(), dumps(a)) for a in catalog])
    wait_for(lambda: metric(worker, "recstream_catalog_records_total") >= len(catalog), 120, 0.2)
    return worker
