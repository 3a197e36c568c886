"""Tables (RocksDB via rocksdict, changelogged to Kafka). Values are msgspec-encoded bytes.

Partitioned tables share signals.keyed's partitioning (key = user id), so a user's profile
and recommendations live with the user's events. Global tables are held whole by every worker.
"""

from __future__ import annotations

from streams.core.catalog import MAX_CURATED_IDS, CatalogIndex, decode_curated, leaves_lists
from streams.worker.app import app, settings

# Every worker's in-memory catalog index (fed from the artworks/editorial tables).
catalog_index = CatalogIndex()
gone_works: set[str] = set()  # works that left the catalog, to be swept out of every list (agents.refresh)


# Bounded RocksDB memory: faust's defaults (64 MB memtables x3, 2 GB block cache) are per
# partition store, and a worker holds dozens of stores. The block cache is replaced by one
# shared by every store at worker start (streams.worker.patches.install_rocksdb_budget).
ROCKSDB = {"write_buffer_size": settings.rocksdb_write_buffer_mb * 1024 * 1024, "max_write_buffer_number": 2,
           "block_cache_size": 8 * 1024 * 1024}


def _raw(table):
    # The changelog topic was already built (with json) when the table was registered, and
    # recovery decodes with it while live writes use table.*_serializer: rebuild it so both
    # agree (same name, so the table manager's registration still holds).
    table.key_serializer = "raw"
    table.value_serializer = "raw"
    table.changelog_topic = table._new_changelog_topic()
    return table


def _global_table(name: str, **kwargs):
    """A table every worker holds whole. faust assigns each worker every partition of a global
    table's changelog as *active*, and applies an active partition's records in batches of
    recovery_buffer_size (default 1,000), also after recovery: another worker's writes sat in that
    buffer, so each worker saw only its own until a restart (fuzzing: two workers each knew half the
    image pools and counted half the experiment's users). One record at a time, as they come."""
    return app.GlobalTable(name, recovery_buffer_size=1, **kwargs)


def _key(event) -> str:
    """A changelog event's key: faust hands it over decoded (str, the tables' key_type), not as
    bytes; `.decode()` on it raised in every delete, so a deleted artwork stayed in the index of
    every worker that read the delete from the changelog (fuzzing: deleted works back after a kill -9)."""
    return event.key if isinstance(event.key, str) else bytes(event.key).decode()


async def _artwork_changed(event) -> None:
    was = catalog_index.get(key := _key(event))
    if event.value is None:
        catalog_index.remove(key)
    else:
        catalog_index.load([event.value])
    if leaves_lists(was, catalog_index.get(key)):
        gone_works.add(key)  # the worker that applied the record noted it already (agents.catalog)


async def _editorial_changed(event) -> None:
    if _key(event) == "curated" and event.value is not None:
        catalog_index.curated = _stored_curated(event.value)


# user id -> streams.core.affinity.Profile (msgpack)
affinity = _raw(app.Table("affinity", key_type=str, value_type=bytes, options=ROCKSDB, help="user -> affinity profile"))
# user id -> streams.core.records.Recommendations (JSON, as sent on the topic)
recommendations = _raw(app.Table("recommendations", key_type=str, value_type=bytes, options=ROCKSDB,
                                 help="user -> current recommendations"))
# "<artist>@<partition>" -> fans in that partition (msgpack list of user ids)
fans = _raw(app.Table("fans", key_type=str, value_type=bytes, options=ROCKSDB, help="artist@partition -> fans"))

# "u:<user>" / "c:<consumer>" -> streams.core.attribution.UserLog, "tally:<p>" / "images:<p>" -> the
# partition's Tally (msgpack): experiment attribution, written with the profiles (streams.core.ledger)
attribution = _raw(app.Table("attribution", key_type=str, value_type=bytes, options=ROCKSDB,
                             help="experiment exposures, conversions and per-partition counts"))
# "tally:<p>" / "images:<p>" -> a copy of each partition's Tally, for every worker's readout
experiment_tallies = _raw(_global_table("experiment_tallies", key_type=str, value_type=bytes, options=ROCKSDB,
                                          help="per-partition experiment counts"))

# consumer id -> streams.core.images.ConsumerImages (msgpack)
image_consumers = _raw(app.Table("image_consumers", key_type=str, value_type=bytes, options=ROCKSDB,
                                 help="consumer -> image views and locks per merchant"))
# merchant id -> streams.core.images.ImageCatalog (JSON)
image_catalog = _raw(_global_table("image_catalog", key_type=str, value_type=bytes, options=ROCKSDB,
                                     help="merchant -> images"))
# "p<partition>" -> streams.core.images.GlobalCounts (msgpack): per-partition impressions/conversions
image_stats = _raw(_global_table("image_stats", key_type=str, value_type=bytes, options=ROCKSDB,
                                   help="per-partition image impression/conversion shares"))

# artwork id -> streams.core.records.Artwork (JSON)
artworks = _raw(_global_table("artworks", key_type=str, value_type=bytes, options=ROCKSDB,
                                help="artwork id -> catalog record", on_changelog_event=_artwork_changed))
# "curated" -> {"artwork_ids": [...]}
editorial = _raw(_global_table("editorial", key_type=str, value_type=bytes, options=ROCKSDB,
                                 help="editorial lists", on_changelog_event=_editorial_changed))
# "p<partition>" -> streams.core.popularity.Partial (msgpack): trending + co-engagement shares
popularity = _raw(_global_table("popularity", key_type=str, value_type=bytes, options=ROCKSDB,
                                  help="per-partition popularity shares"))


def ensure_catalog_loaded() -> None:
    """After recovery, local RocksDB may hold records no changelog event will replay."""
    if not catalog_index.bootstrapped:
        curated = editorial.get("curated")
        catalog_index.bootstrap(artworks.values(), _stored_curated(curated) if curated else None)


def _stored_curated(raw: bytes) -> list[str]:
    """The stored editorial list, its first MAX_CURATED_IDS ids (a longer one was stored before the bound)."""
    return decode_curated(raw, limit=None)[:MAX_CURATED_IDS]
