"""signals.keyed -> affinity table, and affinity.updates when a user's top artists change."""

import msgspec

from streams import tables, topics
from streams.affinity import step
from streams.app import affinity_model, app, settings
from streams.metrics import metrics
from streams.records import Signal, encode

_signal = msgspec.json.Decoder(Signal)


@app.agent(topics.signals, concurrency=1)  # stateful: concurrency 1 (faust #606)
async def update_affinity(stream):
    async for value in stream:
        signal = _signal.decode(value)
        result = step(affinity_model, tables.affinity.get(signal.user_id), signal,
                      settings.affinity_update_top_n)
        tables.affinity[signal.user_id] = result.profile
        metrics.inc("recstream_signals_applied_total" if result.applied else "recstream_duplicates_total")
        if result.update is not None:
            await topics.affinity_updates.send(key=signal.user_id.encode(), value=encode(result.update))
