"""Catalog helpers (pure): artwork records and the artwork -> artist lookup."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from streams.records import Artwork

_ARTWORK = msgspec.json.Decoder(Artwork)


def decode_artwork(raw: bytes) -> Artwork:
    """Raises msgspec.ValidationError / DecodeError on bad input (the agent dead-letters it)."""
    artwork = _ARTWORK.decode(raw)
    if not artwork.id or not artwork.artist_id:
        raise msgspec.ValidationError("artwork id and artist_id must be non-empty")
    return artwork


class ArtistLookup:
    """``.get(artwork_id) -> artist_id`` over a table of encoded artworks."""

    def __init__(self, table: Mapping[str, bytes]):
        self.table = table

    def get(self, artwork_id: str) -> str | None:
        raw = self.table.get(artwork_id)
        return None if raw is None else _ARTWORK.decode(raw).artist_id
