"""The Segment-compatible collector on every worker's web server (streams.core.collector is the pure
half): ``POST /v1/batch`` and friends -> ``events.segment``, answered only once the broker has
acknowledged every message of the request."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web as aiohttp_web
from aiokafka.errors import KafkaError

from streams.core import collector
from streams.core.metrics import metrics
from streams.core.setting_rules import write_key_set
from streams.worker.app import app, settings
from streams.worker.topics import segment_events

ACK_TIMEOUT_S = 30.0
ACCEPTED_KEYS = write_key_set(settings.write_keys)
# what aiohttp inflates (br and zstd only with their libraries: without, aiohttp answers 400 itself)
DECODED = frozenset({"", "identity", "gzip", "deflate", "br", "zstd"})


# any page may post (a browser SDK's write key is public, as on Segment); without it a browser hid every answer
CORS = {"Access-Control-Allow-Origin": "*"}
PREFLIGHT = {**CORS, "Access-Control-Allow-Methods": "POST, OPTIONS", "Access-Control-Max-Age": "86400",
             "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding"}


def _refuse(status: int, code: str, message: str) -> aiohttp_web.Response:
    """Segment's error shape ({"code", "message"}): the SDKs log both."""
    return aiohttp_web.json_response({"success": False, "code": code, "message": message}, status=status,
                                     headers=CORS)


async def preflight(request: aiohttp_web.Request) -> aiohttp_web.Response:
    """A browser's CORS preflight (a post with a JSON content type or an Authorization header)."""
    return aiohttp_web.Response(status=204, headers=PREFLIGHT)


async def track(request: aiohttp_web.Request) -> aiohttp_web.Response:
    """aiohttp inflates gzip bodies and stops reading one past its client_max_size (1 MB)."""
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding not in DECODED:  # aiohttp would read it as uncompressed
        return _unread(request, f"Content-Encoding {coding[:32]!r} is not supported: send gzip, deflate or none",
                       415, "unsupported_encoding")
    try:
        body = await request.read()
    except aiohttp_web.RequestPayloadError as exc:  # a body that does not inflate: the client's fault, not ours
        return _unread(request, f"unreadable body: {exc}")
    except aiohttp_web.HTTPRequestEntityTooLarge:
        return _unread(request, f"the batch is over {collector.MAX_BATCH_BYTES // 1024} KB")
    except ConnectionResetError:  # the client left mid-body: aiohttp logged each with a traceback (a log flood)
        metrics.inc("recstream_collector_rejected_total", reason="aborted")
        return _refuse(400, "aborted", "the connection closed before the body ended")  # no one to read it
    try:
        batch = collector.collect(request.match_info["endpoint"], body, time.time(),
                                  request.headers.get("Authorization"), ACCEPTED_KEYS)
    except collector.Unauthorized as exc:
        metrics.inc("recstream_collector_rejected_total", reason="unauthorized")
        return _refuse(401, "unauthorized", str(exc))
    except collector.Rejected as exc:
        metrics.inc("recstream_collector_rejected_total", reason="bad_request")
        return _refuse(400, "bad_request", str(exc))
    try:
        await asyncio.wait_for(_produce(batch.records), ACK_TIMEOUT_S)
    except (KafkaError, asyncio.TimeoutError) as exc:  # the SDKs retry a 503 with backoff
        return _refuse(503, "unavailable", f"the broker did not acknowledge: {type(exc).__name__}")
    metrics.inc("recstream_collector_messages_total", by=len(batch.records))
    return aiohttp_web.json_response({"success": True}, headers=CORS)


def _unread(request: aiohttp_web.Request, why: str, status: int = 400,
            code: str = "bad_request") -> aiohttp_web.Response:
    """A refusal (400 unless told) for a body left unread, on a connection closed after it: aiohttp would otherwise read
    (and inflate) the rest before the next request, and a 1 MB gzip bomb inflating to 900 MB held
    the whole worker for seconds (fuzzing)."""
    metrics.inc("recstream_collector_rejected_total", reason=code)
    request.content.feed_eof()
    refused = _refuse(status, code, why)
    refused.force_close()  # what is left of that body cannot start the next request
    return refused


async def _produce(records: list[tuple[bytes | None, bytes]]) -> None:
    producer = app.producer._ensure_producer()  # aiokafka's: one future per message, awaited together
    topic = segment_events.get_topic_name()
    sent = [await producer.send(topic, value, key=key) for key, value in records]
    await asyncio.gather(*sent)


app.web.web_app.router.add_post("/v1/{endpoint}", track)
app.web.web_app.router.add_route("OPTIONS", "/v1/{endpoint}", preflight)
