"""What the HTTP API answers to requests it cannot serve: JSON bodies like its own errors' (aiohttp
answers an unknown path or method in plain text), a redirect for a known path given with a
trailing slash, and a 400 for a path whose percent-escapes decode to no text (`json_errors`, the
middleware every request goes through)."""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_to_bytes

from aiohttp import web as aiohttp_web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_urldispatcher import MatchInfoError
from yarl import URL

from streams.core.metrics import metrics

log = logging.getLogger(__name__)

ECHOED_CHARS = 200  # of a path or id an error repeats back: a client's 8 KB id is not worth 8 KB again


class MalformedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (an over-long line or header, a bad Content-Length or
    chunk size) at ERROR with its traceback, so any client could fill the worker's log. It answers
    400 either way; here it is counted and logged in one debug line, as aiohttp treats a bad method."""

    def filter(self, record: logging.LogRecord) -> bool:
        problem = record.exc_info[1] if record.exc_info else None
        if not isinstance(problem, HttpProcessingError):
            return True
        metrics.inc("recstream_http_malformed_requests_total")
        log.debug("malformed HTTP request (%s): %s", record.getMessage(), problem)
        return False


def echoed(text: str) -> str:
    """`text` as an error body repeats it: at most ECHOED_CHARS characters.

    >>> echoed("u1"), len(echoed("x" * 8192))
    ('u1', 201)
    """
    return text if len(text) <= ECHOED_CHARS else text[:ECHOED_CHARS] + "…"


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def malformed_escapes(raw_path: str) -> bool:
    """Whether a request target's path has a "%" that is no escape ("%ZZ") or escapes that are no
    UTF-8 ("%C3%28"): aiohttp keeps such a path's characters literally, so "/recommendations/%ZZ"
    served (and counted an exposure for) a user "%ZZ" that no client can name properly.

    >>> malformed_escapes("/recommendations/u%201?q=%"), malformed_escapes("/recommendations/%ZZ")
    (False, True)
    >>> malformed_escapes("/recommendations/%C3%28"), malformed_escapes("/recommendations/%C3%A9")
    (True, False)
    """
    path = raw_path.partition("?")[0]
    if "%" not in path:
        return False
    if _BAD_ESCAPE.search(path):
        return True
    try:
        unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@aiohttp_web.middleware
async def json_errors(request, handler):
    """A path with malformed escapes refused (400), unknown paths and methods answered in JSON (with
    Allow on a 405), a known path with a trailing slash redirected (308) to the path without it.
    Served routes pass straight through."""
    if malformed_escapes(request.raw_path):
        return aiohttp_web.json_response(
            {"error": "the path has a malformed percent-escape: encode an id's bytes as UTF-8, each as %XX"},
            status=400)
    match = request.match_info
    if not isinstance(match, MatchInfoError):
        return await handler(request)
    error = match.http_exception
    path, mark, query = request.raw_path.partition("?")
    stripped = path.rstrip("/")
    # "//host" would be a Location naming another host: no redirect for a path that could read so
    if error.status == 404 and stripped != path and stripped.startswith("/") and not stripped.startswith("//"):
        target = URL(stripped + mark + query, encoded=True)
        if not isinstance(await request.app.router.resolve(request.clone(rel_url=target)), MatchInfoError):
            raise aiohttp_web.HTTPPermanentRedirect(target)
    body = {"error": (error.reason or "error").lower(), "path": echoed(request.path)}
    headers = {}
    if isinstance(error, aiohttp_web.HTTPMethodNotAllowed):
        body["allowed"] = sorted(error.allowed_methods)
        headers["Allow"] = ",".join(body["allowed"])
    return aiohttp_web.json_response(body, status=error.status, headers=headers)
