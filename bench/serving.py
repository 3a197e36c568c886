"""Serving under wrk: GET /recommendations/{user} of a real recstream worker vs a bare aiohttp
handler returning a constant body of the same size (`web.run_app` as it comes, the issue's baseline; and
the same on uvloop, the loop recstream's workers run on, for reference), same machine, same run,
alternating rounds.

What it measures: requests/s and latency percentiles (p50, p99) that `wrk` (a C load generator,
so the client is not the limit) gets from each server with 2 threads, 32 connections, for 8 s,
each request naming a random user of the worker's preloaded set (a generated wrk Lua script picks
them; its `done()` prints the summary as one JSON line). The worker is set up as before: the demo
catalog, then 20,000 demo events applied, so every one of the 1,000 users requested has a list.
The report gives each server's median round (by requests/s), every round, and recstream / bare.

Needs `wrk` on the PATH: Debian/Ubuntu `apt-get install -y wrk` (the bench says so and exits 2
when it is missing). Run: `.venv/bin/python bench/serving.py`; shorter, for a smoke run:
`BENCH_SERVING_ROUNDS=1 BENCH_SERVING_SECONDS=2 .venv/bin/python bench/serving.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import demo_events, metric, pipeline_with_catalog, preload, wait_for  # noqa: E402
from streams.kafka.broker import EmbeddedBroker, _die_with_parent, free_port  # noqa: E402

THREADS, CONNECTIONS = 2, 32
SECONDS = int(os.environ.get("BENCH_SERVING_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_SERVING_ROUNDS", "3"))
OURS, BARE_NAME = "recstream GET /recommendations/{user}", "bare aiohttp handler (constant body)"
BARE_UV = "the same bare handler on uvloop"  # recstream's workers run on uvloop (RECSTREAM_EVENT_LOOP)
BARE = """
import asyncio, sys
from aiohttp import web
if sys.argv[3] == "uvloop":
    import uvloop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
body = open(sys.argv[2], "rb").read()
async def handle(request):
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_get("/recommendations/{user}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""
# {users} is a Lua table of quoted ids. Each wrk thread has its own Lua state: setup() (main
# state) hands each thread its own seed, so the threads do not replay one sequence.
LUA = """
local users = {users}
local n = 0
function setup(thread)
  n = n + 1
  thread:set("seed", os.time() * 100 + n)
end
function init(args)
  math.randomseed(seed)
end
function request()
  return wrk.format("GET", "/recommendations/" .. users[math.random(#users)])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def need_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        print("bench/serving.py needs wrk on the PATH: apt-get install -y wrk", file=sys.stderr)
        sys.exit(2)
    return path


def lua_script(users: list[str]) -> str:
    """A temporary wrk script requesting random users of `users`; the caller deletes it."""
    table = "{" + ", ".join(json.dumps(u) for u in users) + "}"  # ids are plain ASCII: JSON quoting is Lua quoting
    fd, path = tempfile.mkstemp(prefix="recstream-wrk-", suffix=".lua")
    with os.fdopen(fd, "w") as f:
        f.write(LUA.replace("{users}", table))
    return path


def run_wrk(wrk: str, base: str, script: str) -> dict:
    """One wrk run against `base`; requests/s, p50/p99 (ms), errors and wrk's own text."""
    cmd = [wrk, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--timeout", "2s", "--latency",
           "-s", script, f"{base}/recommendations/"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 30, check=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    s = json.loads(line[len("WRKJSON "):])
    errors = sum(s[k] for k in ("connect", "read", "write", "status", "timeout"))
    if errors:  # a failing server answers fast: its rate would mean nothing
        raise RuntimeError(f"wrk saw {errors} errors against {base}:\n{out}")
    return {"rps": s["requests"] / (s["duration_us"] / 1e6), "p50_ms": s["p50_us"] / 1000,
            "p99_ms": s["p99_us"] / 1000, "max_ms": s["max_us"] / 1000, "requests": s["requests"]}


def main() -> dict:
    wrk = need_wrk()
    demo, records = demo_events(20000, users=2000)
    runs: dict[str, list[dict]] = {OURS: [], BARE_NAME: [], BARE_UV: []}
    with EmbeddedBroker() as broker:
        worker = pipeline_with_catalog(broker, "srv.", "bench-serving", demo)
        bares, script = [], None
        body_fd, body_file = tempfile.mkstemp(prefix="recstream-bare-", suffix=".json")
        os.close(body_fd)
        try:
            preload(broker.bootstrap, "srv.events.segment", records)
            wait_for(lambda: metric(worker, "recstream_signals_applied_total") >= len(records), 300, 0.5)
            users = sorted({k.decode() for k, _ in records if k})[:1000]
            status, body = worker.get(f"/recommendations/{users[0]}")
            assert status == 200, status
            with open(body_file, "wb") as f:
                f.write(body)
            script = lua_script(users)
            servers = [(OURS, worker.base_url)]
            for name, loop in ((BARE_NAME, "aio"), (BARE_UV, "uvloop")):
                port = free_port()
                bares.append(subprocess.Popen([sys.executable, "-c", BARE, str(port), body_file, loop],
                                              preexec_fn=_die_with_parent))
                wait_for(lambda p=port: _up(p), 30, 0.1)
                servers.append((name, f"http://127.0.0.1:{port}"))
            # alternating rounds, so a noisy neighbour hits every server alike; the median round counts
            for r in range(ROUNDS):
                for name, base in servers:
                    runs[name].append(run_wrk(wrk, base, script))
                    x = runs[name][-1]
                    print(f"[serving] round {r + 1}/{ROUNDS} {name}: {x['rps']:,.0f} req/s, p50 {x['p50_ms']:.2f} ms, "
                          f"p99 {x['p99_ms']:.2f} ms", file=sys.stderr, flush=True)
        finally:
            worker.stop()
            for bare in bares:
                bare.kill()
                bare.wait(5)
            for path in (body_file, script):
                if path and os.path.exists(path):
                    os.unlink(path)
    return {"rounds": runs, "body_bytes": len(body)}


def _median(rounds: list[dict]) -> dict:
    by_rps = sorted(rounds, key=lambda r: r["rps"])
    return by_rps[len(by_rps) // 2]


def _up(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def report(results: dict) -> str:
    runs = results["rounds"]
    med = {name: _median(rounds) for name, rounds in runs.items()}
    ours, bare, bare_uv = med[OURS], med[BARE_NAME], med[BARE_UV]
    every = {name: ", ".join(f"{x['rps']:,.0f} ({x['p99_ms']:.2f})" for x in rounds) for name, rounds in runs.items()}
    lines = [f"| {name} | {m['rps']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {every[name]} |"
             for name, m in med.items()]
    per_round = ", ".join(f"{o['rps'] / b['rps']:.2f}×" for o, b in zip(runs[OURS], runs[BARE_NAME], strict=True))
    return "\n".join([
        f"Serving under wrk ({THREADS} threads, {CONNECTIONS} connections, {SECONDS} s, random users of 1,000; "
        f"{results['body_bytes']:,}-byte body; {len(runs[OURS])} alternating rounds, median round by requests/s)", "",
        "| server | requests/s | p50 ms | p99 ms | every round, requests/s (p99 ms) |", "|---|---|---|---|---|", *lines, "",
        f"recstream / bare = {ours['rps'] / bare['rps']:.2f}× (target ≥ 0.7×, p99 ≤ 5 ms; round by round: {per_round});"
        f" recstream / the bare handler on uvloop = {ours['rps'] / bare_uv['rps']:.2f}×"])


if __name__ == "__main__":
    print(report(main()))
