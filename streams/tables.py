"""Tables (RocksDB via rocksdict, changelogged to Kafka). Values are msgspec-encoded bytes."""

from __future__ import annotations

from streams.app import app


def _raw(table):
    # faust picks "json" for non-Model types; our values are already encoded bytes and the
    # keys plain strings, so the changelog must carry them untouched.
    # The changelog topic was already built (with json) when the table was registered, and
    # recovery decodes with it while live writes use table.*_serializer: rebuild it so both
    # agree (same name, so the table manager's registration still holds).
    table.key_serializer = "raw"
    table.value_serializer = "raw"
    table.changelog_topic = table._new_changelog_topic()
    return table


# user id -> streams.affinity.Profile (msgpack). Partitioned like signals.keyed.
affinity = _raw(app.Table("affinity", key_type=str, value_type=bytes, help="user -> affinity profile"))

# artwork id -> streams.records.Artwork (JSON). Every worker holds the whole catalog.
artworks = _raw(app.GlobalTable("artworks", key_type=str, value_type=bytes,
                                help="artwork id -> catalog record"))
