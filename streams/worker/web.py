"""HTTP API served by every worker (faust web, aiohttp). Keyed reads go to the key's owner."""

from __future__ import annotations

import hmac
import logging
import os
import time
from urllib.parse import quote

import msgspec
from aiohttp import web as aiohttp_web

from streams.core.affinity import load
from streams.core.aliases import MAX_VIA
from streams.core.coengagement import MARK
from streams.core.experiments import assign
from streams.core.metrics import metrics
from streams.core.properties import is_id
from streams.core.recommend import cold_start
from streams.core.records import Recommendations, decode_recs, encode
from streams.worker import exposures, monitoring, tables
from streams.worker.app import affinity_model, app, clock, image_config, pipeline_config, settings
from streams.worker.hot import keep_hot
from streams.worker.reads import forward, kept_partition, marked_stale, owned_partition, read, routed
from streams.worker.state import image_stats, pools, popularity_view
from streams.worker.web_errors import MalformedRequests, echoed, json_errors

logging.getLogger("aiohttp.server").addFilter(MalformedRequests())
_UNCACHED = {"Cache-Control": "no-store"}  # a user's answers change with every event: no cache may keep one


@aiohttp_web.middleware
async def _require_token(request, handler):
    """With RECSTREAM_API_TOKEN set, everything but /health and the collector (/v1/*, which
    checks write keys) needs the bearer token. Routed reads carry it along (faust forwards the
    request headers to the owning worker)."""
    token = settings.api_token
    if token and request.path != "/health" and not request.path.startswith("/v1/"):
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        given = given.strip().encode("utf-8", "surrogateescape")  # aiohttp keeps non-UTF-8 bytes as surrogates
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, token.encode()):  # RFC 7235
            return aiohttp_web.json_response({"error": "unauthorized"}, status=401,
                                             headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


def install() -> None:
    """What importing this module does not do (streams.cli.worker calls it): the token check
    (only when a token is set: a middleware wraps every request), the plain aiohttp route and
    the served lists kept in memory (streams.worker.hot)."""
    _without_unused_cors_hook()
    # faust makes aiohttp's runner with its defaults: a connection that sent nothing, half a request head or
    # nothing more after a request was held an hour, and ~20,000 such used up the worker's file descriptors
    app.web._runner._kwargs["keepalive_timeout"] = settings.http_idle_timeout_s
    app.web.web_app.middlewares.insert(0, json_errors)
    keep_hot(tables.recommendations.changelog_topic.get_topic_name(), settings.hot_lists_mb * 1024 * 1024)
    if settings.api_token:
        app.web.web_app.middlewares.append(_require_token)
    app.web.web_app.router.add_get("/recommendations/{user_id}", user_recommendations)


@app.page("/users/{user_id}/affinity")
@routed(tables.affinity)
async def user_affinity(web, request, user_id: str):
    n = request.query.get("n", "50")
    if not (n.isascii() and n.isdigit() and len(n) <= 4):  # a bad request first, whoever the user
        return web.json({"error": "n must be a whole number from 0 to 9999", "n": n[:32]}, status=400)
    raw = None if user_id == MARK else read(tables.affinity, user_id)  # the mark is no user's profile
    if raw is None:
        # not cached either: a 404 is cacheable by default, and a cache kept answering it after the first event
        return web.json({"error": "unknown user", "user_id": echoed(user_id)}, status=404, headers=dict(_UNCACHED))
    profile = load(raw)
    top = [] if profile.alias_of else affinity_model.top(profile, int(n))
    return web.json({  # a pointer's history lives on at alias_of: what it held before the link came is timing's
        "user_id": user_id,
        "as_of": None if profile.alias_of else profile.ref,
        "events": 0 if profile.alias_of else profile.events,
        "alias_of": profile.alias_of or None,
        "artists": [{"artist_id": a, "score": s} for a, s in top],
    }, headers=dict(_UNCACHED))


def _without_unused_cors_hook() -> None:
    """faust sets up aiohttp_cors at start whatever its options, and its hook then runs on every
    response to find no CORS route (~4 µs of a ~80 µs GET /recommendations under wrk). Without CORS
    options (recstream sets none) no route is CORS-enabled: set it up now, without the hook."""
    hooks = app.web.web_app.on_response_prepare
    if not app.web.cors_options:
        before = list(hooks)
        _ = app.web.cors  # set up now: faust's `on_start` finds it so and adds no second hook
        for hook in [h for h in hooks if h not in before]:
            hooks.remove(hook)


async def user_recommendations(request):
    """GET /recommendations/{user_id}: the precomputed list; a new or unknown user gets the
    cold-start list, never a 404. The hot read, so a plain aiohttp handler (`install`), not a
    faust view: faust's view dispatch and its web sensors cost more than the read itself."""
    return await _served_list(request, request.match_info["user_id"])


HOPS = "X-Recstream-Hops"  # pointers a read forwarded to another worker followed already


async def _served_list(request, user_id: str, hops: int | None = None):
    """`user_id`'s list, served here or by its owner; an id merged into another serves that id's
    list (its value is a pointer there: streams.core.aliases.pointer_list), at most MAX_VIA hops
    in all: counted across workers (a ring of pointers over two workers went round for 10 s)."""
    if hops is None:
        given = request.headers.get(HOPS, "0")
        hops = min(int(given), MAX_VIA) if given.isascii() and given.isdigit() and len(given) < 4 else 0
    partition = owned_partition(tables.recommendations, user_id)
    stale = partition is None and kept_partition(tables.recommendations, user_id) is not None
    if partition is None and not stale:
        forwarded = await forward(tables.recommendations, user_id, request,
                                  f"/recommendations/{quote(user_id, safe='')}" if hops else None,
                                  {HOPS: str(hops)} if hops else None)
        if forwarded is not None:
            return forwarded
    raw = read(tables.recommendations, user_id, partition)
    # a list ends with its items; a pointer (its alias_of last) does not
    if raw is not None and raw[-2:] != b"]}" and hops < MAX_VIA and (merged := decode_recs(raw).alias_of):
        return await _served_list(request, merged, hops + 1)
    shown = request.method == "GET"  # a HEAD (a probe, a link checker) shows nobody anything
    if shown:
        metrics.inc("recstream_http_recommendations_total")
    if raw is None:
        tables.ensure_catalog_loaded()
        variant = assign(pipeline_config.experiment, user_id, pipeline_config.variants)
        now = clock.now()
        popularity = popularity_view(now)
        items = cold_start(tables.catalog_index, popularity, variant, now)
        raw = encode(Recommendations(user_id, variant.name, now, pipeline_config.model_version, "cold-start", items))
    if shown and settings.http_exposures and is_id(user_id):  # an id ingest refuses never converts: not one
        exposures.note(user_id, raw)  # an exposure, sent with the others
    response = aiohttp_web.Response(body=raw, content_type="application/json", charset="utf-8", headers=_UNCACHED)
    return marked_stale(response) if stale else response


@app.page("/experiments")
async def experiments(web, request):
    """Every experiment's readout: per variant users, conversions, rate and lift with 95%
    intervals, p-value, the split check and the verdict (streams.core.ledger.readout)."""
    return web.json(_readout())


_last_readout: list = [None, None]  # (the tallies it was computed from, the readout)


def _readout() -> dict:
    """The readout of the current tallies, computed once per change of them (a /metrics scrape
    reads it for four gauges)."""
    from streams.core.ledger import readout

    tallies = sorted(tables.experiment_tallies.items())
    if tallies != _last_readout[0]:
        shares = {"recs": (pipeline_config.experiment, {v.name: v.share for v in pipeline_config.variants.values()}),
                  "images": (image_config.experiment, {v.name: v.share for v in image_config.variants.values()})}
        _last_readout[:] = [tallies, readout(tallies, shares)]
    return _last_readout[1]


@app.timer(interval=settings.readout_interval_s)
async def _publish_readout() -> None:
    """A snapshot of every experiment's counts on experiments.readouts (the history behind
    `recstream experiments report --out`), from the worker that owns partition 0."""
    from streams.core.ledger import snapshot
    from streams.worker import topics
    from streams.worker.commit import send_all
    from streams.worker.runtime import owned_partitions

    if 0 in owned_partitions(app, tables.attribution):
        records = snapshot(_readout(), clock.now())
        await send_all(app, [(topics.experiment_readouts, key, value) for key, value in records])


def _experiment_gauge(field: str):
    def read() -> dict:
        return {(("experiment", e["name"]), ("variant", v["variant"])): v[field]
                for e in _readout()["experiments"] for v in e["variants"]}
    return read


for _field in ("users", "exposures", "converted", "conversions"):
    metrics.gauge(f"recstream_experiment_{_field}", _experiment_gauge(_field))


@app.page("/images/stats")
async def image_statistics(web, request):
    """Global impressions/conversions per merchant image and every pool: the simulator's input."""
    stats = image_stats()
    merchants = sorted({key.split("|", 1)[0] for key in stats} | set(tables.image_catalog.keys()))
    return web.json({
        "stats": {k: {"impressions": v[0], "conversions": v[1]} for k, v in stats.items()},
        "pools": {m: [msgspec.structs.asdict(i) for i in pools.get(m)] for m in merchants},
    })


@app.page("/images/{consumer_id}")
@routed(tables.image_consumers, match_info="consumer_id")
async def consumer_images(web, request, consumer_id: str):
    """Which image to show this consumer for each merchant: ?merchants=m1,m2&q=search words."""
    from streams.core.events import requested_merchants
    from streams.core.image_pipeline import answer, load_state
    from streams.core.properties import Rejected
    from streams.core.records import MAX_ID_CHARS, ImageRequest

    merchants = requested_merchants([m for m in request.query.get("merchants", "").split(",") if m] or [""])
    if isinstance(merchants, Rejected):  # refused as the request topic refuses it (one merchant at most once)
        return web.json({"error": f"give ?merchants=m1,m2: {merchants.detail}"}, status=400)
    query = request.query.get("q", "")
    if len(query) > MAX_ID_CHARS:  # the request topic's bound on search words
        return web.json({"error": f"q is longer than {MAX_ID_CHARS} characters"}, status=400)
    req = ImageRequest(f"http-{time.time_ns()}", consumer_id, merchants, query)
    reply = answer(image_config, req, load_state(read(tables.image_consumers, consumer_id)), pools, image_stats())
    return web.json(reply, headers=dict(_UNCACHED))


@app.page("/health")
async def health(web, request):
    """The worker's own state partitions (the user tables' active partitions; every topic's
    partitions would count each input, changelog and output topic again). 503 until the current
    assignment's stores are restored (faust's own `completed` flag stays set after the first
    recovery, so a worker restoring a partition it just took over reported itself ready)."""
    from streams.worker.runtime import owned_partitions
    from streams.worker.runtime import recovered as restored

    recovered = restored(app)
    partitions = owned_partitions(app, tables.affinity)
    body = {"status": "ok" if recovered else "recovering", "recovered": recovered,
            "assigned_partitions": len(partitions), "partitions": partitions,
            "rebalancing": bool(app.rebalancing), "lag": monitoring.total_lag(),
            "pid": os.getpid()}  # which process answered (WorkerProcess)
    return web.json(body, status=200 if recovered else 503)


@app.page("/metrics")
async def prometheus_metrics(web, request):
    return web.text(metrics.render(), content_type="text/plain; version=0.0.4")
