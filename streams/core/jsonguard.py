"""Decoding untrusted JSON (pure): size and nesting checked before a validating decode, and the
dead-letter reason for whatever a decoder raised (never the values sent)."""

from __future__ import annotations

import re

import msgspec

from streams.core.properties import (
    Rejected,
)


def decode_checked(decoder: msgspec.json.Decoder, raw: bytes, max_bytes: int):
    """Size and nesting checks, then a validating decode; a Rejected with the reason instead of
    raising. msgspec's messages name the path and the expected type, never the value."""
    if len(raw) > max_bytes:
        return Rejected("oversized", f"{len(raw)} bytes > limit {max_bytes}")
    if not raw:
        return Rejected("invalid_json", "the value is empty")
    if too_deep(raw):
        return Rejected("too_deep", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return Rejected(*decode_problem(exc, raw))


def _not_utf8(raw: bytes) -> int | None:
    """Where `raw` stops being UTF-8, or None.

    >>> _not_utf8(b'{"a": 1}'), _not_utf8(b'\\xff\\xfe{'), _not_utf8(b'{"caf\\xe9"}')
    (None, 0, 5)
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def decode_problem(exc: Exception, raw: bytes | None = None) -> tuple[str, str]:
    """The dead-letter reason and detail for what a decoder raised (never the values); `raw`, the
    bytes decoded, tells bytes that are not UTF-8 from bad JSON where msgspec says only "malformed".
    RecursionError cannot come after the depth check; kept as the last line of defence."""
    if isinstance(exc, msgspec.ValidationError):
        return "invalid_field", str(exc)
    if isinstance(exc, msgspec.DecodeError) and raw is not None and (bad := _not_utf8(raw)) is not None:
        return "invalid_utf8", f"invalid UTF-8 at byte {bad}"
    if isinstance(exc, msgspec.DecodeError):  # msgspec >= 0.23 reports bad UTF-8 this way too
        return ("invalid_utf8" if "UTF-8" in str(exc) else "invalid_json"), str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return "invalid_utf8", f"invalid UTF-8 at byte {exc.start}"
    if isinstance(exc, RecursionError):
        return "too_deep", "JSON nested too deep"
    return "internal_error", f"{type(exc).__name__} while decoding"


MAX_DEPTH = 32  # Segment events nest 3-5 levels; msgspec itself recurses to ~1,000 and then raises


# A string, or an unterminated one to the end of the text: each match ends where the next search
# starts, so the scan is linear. With the closing quote required, a quote that opened no string
# (b'"' + b'\\"' * 32,000: 64 KB) was tried again from every later quote: 29 s a message, past the
# worker's session timeout, and the redelivered message stalled its restart the same way.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON arrays/objects nest deeper than `limit` (brackets in strings do not count).
    Almost every message has fewer brackets than the limit, which a count in C shows at once.

    >>> too_deep(b'{"a": [1, {"b": "[[[["}]}', limit=3), too_deep(b'[' * 4 + b']' * 4, limit=3)
    (False, True)
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for bracket in _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        depth += 1 if bracket in b"[{" else -1
        if depth > limit:
            return True
    return False


def spec_text(spec: str) -> str:
    """A JSON setting's text: itself, or the file it names after an @ (``@variants.json``)."""
    if spec.startswith("@"):
        with open(spec[1:], encoding="utf-8") as f:
            return f.read()
    return spec
