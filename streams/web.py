"""HTTP API served by every worker (faust web, aiohttp). Keyed reads go to the key's owner."""

from __future__ import annotations

from streams import tables
from streams.affinity import load
from streams.app import affinity_model, app
from streams.metrics import metrics


@app.page("/users/{user_id}/affinity")
@app.table_route(table=tables.affinity, match_info="user_id")
async def user_affinity(web, request, user_id: str):
    raw = tables.affinity.get(user_id)
    if raw is None:
        return web.json({"error": "unknown user", "user_id": user_id}, status=404)
    profile = load(raw)
    top = affinity_model.top(profile, int(request.query.get("n", 50)))
    return web.json({
        "user_id": user_id,
        "as_of": profile.ref,
        "events": profile.events,
        "artists": [{"artist_id": a, "score": s} for a, s in top],
    })


@app.page("/health")
async def health(web, request):
    recovered = app.tables.recovery.completed.is_set()
    assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in app.assignor.assigned_actives())
    body = {"status": "ok" if recovered else "recovering", "recovered": recovered,
            "assigned_partitions": len(assigned), "rebalancing": bool(app.rebalancing)}
    return web.json(body, status=200 if recovered else 503)


@app.page("/metrics")
async def prometheus_metrics(web, request):
    return web.text(metrics.render(), content_type="text/plain; version=0.0.4")
