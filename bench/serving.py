"""Serving: GET /recommendations/{user} with concurrent clients vs a bare aiohttp handler
returning a constant of the same size, on the same machine in the same run, in alternating rounds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import demo_events, metric, pipeline_with_catalog, preload, wait_for  # noqa: E402
from streams.broker import EmbeddedBroker, _die_with_parent, free_port  # noqa: E402

CONCURRENCY, SECONDS, ROUNDS = 16, 8.0, 3
OURS, BARE_NAME = "recstream GET /recommendations/{user}", "bare aiohttp handler (constant body)"
BARE = """
import sys
from aiohttp import web
body = open(sys.argv[2], "rb").read()
async def handle(request):
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_get("/recommendations/{user}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def load(base: str, users: list[str]) -> dict:
    import aiohttp

    latencies: list[float] = []
    deadline = time.perf_counter() + SECONDS

    async def client(i: int):
        async with aiohttp.ClientSession() as session:
            j = i
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                async with session.get(f"{base}/recommendations/{users[j % len(users)]}") as resp:
                    await resp.read()
                    assert resp.status == 200
                latencies.append(time.perf_counter() - t)
                j += CONCURRENCY
    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p99_ms": latencies[int(0.99 * len(latencies))] * 1000}


def main() -> dict:
    demo, records = demo_events(20000, users=2000)
    runs: dict[str, list[dict]] = {OURS: [], BARE_NAME: []}
    with EmbeddedBroker() as broker:
        worker = pipeline_with_catalog(broker, "srv.", "bench-serving", demo)
        bare = None
        body_file = os.path.join(os.path.dirname(__file__), ".bare-body.json")
        try:
            preload(broker.bootstrap, "srv.events.segment", records)
            wait_for(lambda: metric(worker, "recstream_signals_applied_total") >= len(records), 300, 0.5)
            users = sorted({k.decode() for k, _ in records if k})[:1000]
            with open(body_file, "wb") as f:
                f.write(worker.get(f"/recommendations/{users[0]}")[1])
            port = free_port()
            bare = subprocess.Popen([sys.executable, "-c", BARE, str(port), body_file], preexec_fn=_die_with_parent)
            wait_for(lambda: _up(port), 30, 0.1)
            # alternating rounds, so a noisy neighbour hits both sides alike; the median round counts
            for _ in range(ROUNDS):
                runs[OURS].append(asyncio.run(load(worker.base_url, users)))
                runs[BARE_NAME].append(asyncio.run(load(f"http://127.0.0.1:{port}", users)))
        finally:
            worker.stop()
            if bare is not None:
                bare.kill()
            if os.path.exists(body_file):
                os.unlink(body_file)
    return {name: _median(rounds) for name, rounds in runs.items()}


def _median(rounds: list[dict]) -> dict:
    by_rps = sorted(rounds, key=lambda r: r["rps"])
    return {**by_rps[len(by_rps) // 2], "all_rps": [r["rps"] for r in rounds]}


def _up(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def report(results: dict) -> str:
    ours, bare = results[OURS], results[BARE_NAME]
    lines = [f"| {name} | {r['rps']:,.0f} | {r['p99_ms']:.1f} | {', '.join(f'{x:,.0f}' for x in r['all_rps'])} |"
             for name, r in results.items()]
    return "\n".join([f"Serving ({CONCURRENCY} concurrent clients, {ROUNDS} alternating rounds of {SECONDS:.0f} s; the median round)",
                      "", "| server | requests/s | p99 ms | every round, requests/s |", "|---|---|---|---|", *lines, "",
                      f"recstream / bare = {ours['rps'] / bare['rps']:.0%} (target ≥ 50%, p99 ≤ 20 ms)"])


if __name__ == "__main__":
    print(report(main()))
