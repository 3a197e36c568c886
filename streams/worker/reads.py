"""Keyed reads for the HTTP API: a key this worker owns is read straight from its partition's
RocksDB; any other key is forwarded to its owner (faust's router names it), as faust's
`table_route` does, without faust's per-request owner lookup.

Through a rebalance, a worker serves the partitions it keeps (`kept_partition`): faust's eager protocol
revokes every partition of every worker, and reads answered 503 everywhere until the whole new assignment
was restored, 10-50 s for each worker added, stopped or lost (an outside check). A partition this worker had
restored whole, and is assigned again under the same group membership, had no other writer meanwhile: its
store is as of this worker's last batch before the rebalance, which such a read serves (marked STALE_HEADER).
New writes wait for the restore as before."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web as aiohttp_web
from faust.exceptions import SameNode
from yarl import URL

from streams.core.metrics import metrics
from streams.worker import fence
from streams.worker.app import app
from streams.worker.commit import known_partitioner, partitioner
from streams.worker.hot import forget_all, hot_tables
from streams.worker.runtime import assignment_restored, recovered

# changelog topic -> the partitions this worker is active for (empty while rebalancing)
_owned: dict[str, set[int]] = {}
_changelogs: dict[str, str] = {}  # table name -> its changelog topic (fixed once the app is set up; once per read)
# changelog topic -> partitions served through a rebalance (see the module docstring), and the member keeping them
_kept: dict[str, set[int]] = {}
_kept_by: list[str | None] = [None]
STALE_HEADER = "X-Recstream-Stale"  # "rebalancing": as of the last batch before it (docs/http-api.md)


@app.on_partitions_revoked.connect
async def _forget_owned(app, revoked, **kwargs) -> None:
    if assignment_restored(app):  # what it owns is whole: served until the new assignment says which it keeps
        _kept.clear()
        _kept.update({topic: set(partitions) for topic, partitions in _owned.items()})
    _kept_by[0] = fence.membership.member_id  # else those kept through the last rebalance still are
    _owned.clear()
    forget_all()


@app.on_partitions_assigned.connect
async def _remember_owned(app, assigned, **kwargs) -> None:
    _owned.clear()
    forget_all()  # recovery may rewrite what was held (streams.worker.hot)
    for tp in app.assignor.assigned_actives():
        _owned.setdefault(tp.topic, set()).add(tp.partition)
    same = _kept_by[0] is not None and fence.membership.member_id == _kept_by[0]  # never out of the group
    for topic, partitions in _kept.items():
        partitions &= _owned.get(topic, set()) if same else set()


def kept_partition(table, key: str) -> int | None:
    """While this worker restores: the partition holding `key` if it is one this worker keeps and its store is
    open (faust closes a revoked one: it must not be opened again here), else None."""
    if recovered(app):
        return None
    name, partition = _key_partition(table, key)
    whole = _owned if _owned and assignment_restored(app) else _kept  # a rebalance begun, its revoke not handled yet
    return partition if partition in whole.get(name, ()) and partition in table.data._dbs else None


def owned_partition(table, key: str) -> int | None:
    """The partition holding `key` if this worker owns it and has recovered it, else None. The
    same answer as faust's router (the default partitioner over the changelog's partitions, the
    assignor's actives), from two dict lookups and a hash."""
    if not recovered(app):
        return None
    name, partition = _key_partition(table, key)
    return partition if partition in _owned.get(name, ()) else None


def _key_partition(table, key: str) -> tuple[str, int | None]:
    """`table`'s changelog and the partition of it holding `key` (None: the producer has no metadata for it yet)."""
    name = _changelog(table)
    found = known_partitioner(app.producer._ensure_producer(), name)
    return name, None if found is None else found(key.encode())


def _changelog(table) -> str:
    name = _changelogs.get(table.name)
    if name is None:
        name = _changelogs[table.name] = table.changelog_topic.get_topic_name()
    return name


def read(table, key: str, partition: int | None = None) -> bytes | None:
    """`key`'s value: from `partition`'s RocksDB when given (or when this worker owns the key),
    else through faust's table (which tries every local store). A table kept hot
    (streams.worker.hot) answers from memory when it holds the key, and keeps what it read: so a
    `partition` given must be `owned_partition`'s answer (owned and recovered), never a guess."""
    if partition is None:
        partition = owned_partition(table, key)
        if partition is None:
            kept = kept_partition(table, key)  # not kept hot: its restore may rewrite it
            return table.get(key) if kept is None else table.data._dbs[kept].get(key.encode())
    raw_key = key.encode()
    hot = hot_tables.get(_changelog(table)) if hot_tables else None
    if hot is None:
        return table.data._db_for_partition(partition).get(raw_key)
    value = hot.get(raw_key)
    if value is None:
        value = table.data._db_for_partition(partition).get(raw_key)
        if value is not None:
            hot.put(raw_key, value)
    return value


async def forward(table, key: str, request, path: str | None = None, headers: dict[str, str] | None = None):
    """The owner's response to `request` (for `path` instead of the request's own when given, with
    `headers` added), or None when this worker turns out to own `key`.
    Safe before the first write: the router hashes keys with the producer's metadata for the
    table's changelog, which the producer only fetches on its first write there."""
    await partitioner(app.producer._ensure_producer(), table.changelog_topic.get_topic_name())
    try:
        return await _proxy(app.router.key_store(table.name, key), request, path, headers)
    except KeyError:  # no owner known: rebalancing
        return _unavailable()
    except SameNode:
        # this worker owns the key; until its partition is recovered the local store can miss the
        # key's records, and an answer from it would be wrong (an unknown user, a cold-start list)
        return None if recovered(app) else _unavailable()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return _unavailable()  # the owner just died or the group is rebalancing
    except RuntimeError:  # "Session is closed": a stopping worker closes faust's HTTP client before its server
        return _unavailable()


_OWNER_TIMEOUT = aiohttp.ClientTimeout(total=10)  # a hung owner: 503 after this, not aiohttp's 5 minutes


async def _proxy(owner: URL, request, path: str | None = None, added: dict[str, str] | None = None):
    """The owner's answer to `request` (faust's `route_req`, which rebuilt the URL with yarl, so
    the users "." and ".." were asked for "/recommendations/" and got a 404, and dropped the
    answer's headers, Retry-After among them). The raw path goes as the client sent it."""
    host, port = _ident(owner)
    if (host, port) == _ident(app.conf.canonical_url):
        raise SameNode()
    url = URL(f"{owner.scheme or 'http'}://{host}:{port}{path or origin_form(request.raw_path)}", encoded=True)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")} | (added or {})
    async with app.http_client.request(request.method, url, headers=headers, timeout=_OWNER_TIMEOUT) as response:
        body = await response.read()
        kept = {k: response.headers[k] for k in ("Retry-After", "Cache-Control", STALE_HEADER) if k in response.headers}
        return aiohttp_web.Response(body=body, status=response.status, headers={
            **kept, "Content-Type": response.headers.get("Content-Type", "application/octet-stream")})


def origin_form(target: str) -> str:
    """The path and query of a request target: an absolute-form target ("http://host/path", which
    HTTP/1.1 servers must accept) made a URL of two authorities, and a 500, when forwarded as is.

    >>> origin_form("/recommendations/u1?x=1"), origin_form("http://x/recommendations/u1"), origin_form("http://x")
    ('/recommendations/u1?x=1', '/recommendations/u1', '/')
    """
    if target.startswith("/"):
        return target
    rest = target.partition("://")[2]
    return "/" + rest.partition("/")[2] if "/" in rest else "/"


def _ident(url: URL) -> tuple[str, int]:
    """(host, port) of a worker's URL, as faust's router compares them (a URL without a scheme is a host)."""
    return (url.host if url.scheme else url.path) or "", int(url.port or 80)


def _unavailable():
    """503 with Retry-After: the key's owner cannot answer right now; a client should retry."""
    return aiohttp_web.json_response({"error": "owner of this key is unavailable, retry shortly"}, status=503,
                                     headers={"Retry-After": "1"})


def routed(table, match_info: str = "user_id"):
    """A faust view for `table`'s keys served where they live: by this worker when it owns the
    key in the URL, else by the owner (`forward`)."""
    import functools

    def decorate(view):
        @functools.wraps(view)
        async def handler(web, request, **kwargs):
            key = request.match_info[match_info]
            owned = owned_partition(table, key)
            stale = owned is None and kept_partition(table, key) is not None
            if owned is None and not stale:
                response = await forward(table, key, request)
                if response is not None:
                    return response
            response = await view(web, request, **kwargs)
            return marked_stale(response) if stale else response
        return handler
    return decorate


def marked_stale(response):
    """A response served from a kept partition while this worker restores (`kept_partition`)."""
    metrics.inc("recstream_http_kept_reads_total")
    response.headers[STALE_HEADER] = "rebalancing"
    return response
