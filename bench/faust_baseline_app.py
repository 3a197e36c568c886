"""Baseline faust apps for the benchmarks (not recstream): BENCH_MODE=forward | consume.

forward: the naive forwarder, one `await topic.send()` per event.
consume: an agent that only counts.
Progress is served at GET /count.
"""

import os

import faust

MODE = os.environ.get("BENCH_MODE", "forward")
app = faust.App(f"bench-{MODE}-{os.environ.get('BENCH_RUN', '0')}", broker=os.environ["BENCH_BROKER"],
                value_serializer="raw", key_serializer="raw", web_port=int(os.environ["BENCH_PORT"]),
                web_host="127.0.0.1", broker_session_timeout=6, broker_heartbeat_interval=0.6, logging_config=None)
source = app.topic(os.environ["BENCH_IN"], value_type=bytes, key_type=bytes)
sink = app.topic(os.environ.get("BENCH_OUT", "bench-out"), value_type=bytes, key_type=bytes)
count = 0


@app.agent(source)
async def run(stream):
    global count
    async for value in stream:
        if MODE == "forward":
            await sink.send(value=value)
        count += 1


@app.page("/count")
async def get_count(web, request):
    return web.json({"count": count})


if __name__ == "__main__":
    app.main()
