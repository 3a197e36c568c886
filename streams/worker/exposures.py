"""Served lists as experiment exposures: `GET /recommendations` notes the list it served, and the
notes leave as Exposure records on signals.keyed, at most one per user per
RECSTREAM_EXPOSURE_FLUSH_S, so a read costs a dict write, not a produce."""

from __future__ import annotations

from streams.worker.app import app, clock, settings

# Notes held at most: reads of 150,000 distinct ids in 19 s held every served list until the next flush
# (an outside fuzzer: RSS 150 -> 332 MB, not given back); a full map leaves at once instead.
MAX_HELD = 4096
served: dict[str, bytes] = {}  # user -> the list last served since the previous flush
_flushing: list = []  # the flush a full map started, while it runs


def note(user: str, raw: bytes) -> None:
    served[user] = raw
    if len(served) >= MAX_HELD and not _flushing:
        _flushing.append(app.loop.create_task(_flush_full()))


async def _flush_full() -> None:
    try:
        await flush()
    finally:
        _flushing.clear()


@app.timer(interval=settings.exposure_flush_s)
async def _send_exposures() -> None:
    await flush()


async def flush() -> None:
    """The noted lists -> Exposure records on signals.keyed (experiment attribution)."""
    if not served:
        return
    from streams.core.pipeline import decode_recs
    from streams.core.records import Exposure, encode_keyed
    from streams.worker import topics
    from streams.worker.commit import send_all

    now, batch = clock.now(), list(served.items())
    served.clear()
    messages = []
    for user, raw in batch:
        recs = decode_recs(raw)
        items = [(i.artwork_id, i.source) for i in recs.items]
        exposure = Exposure(user, f"served:{int(now)}", now, items, recs.variant)
        messages.append((topics.signals, user.encode(), encode_keyed(exposure)))
    await send_all(app, messages)
