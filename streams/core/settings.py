"""Configuration: ``RECSTREAM_*`` environment variables read once into a frozen object.

Every knob is documented in docs/configuration.md; `Settings.describe()`
prints the same list with current values (``recstream config``).

>>> s = Settings.from_env({"RECSTREAM_HALF_LIFE_DAYS": "7", "RECSTREAM_WEIGHTS": "view=2"})
>>> s.half_life_days, s.weights["view"], s.weights["order"]
(7.0, 2.0, 12.0)
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from streams.core.setting_rules import (
    DEFAULT_WEIGHTS,
    DIRECTORY,
    HOST,
    MAX_FETCH_WAIT_MS,
    MAX_PARTITIONS,
    PREFIX,
    TLS_FILE,
    ConfigError,
    accepts,
    bootstrap_servers,
    check_together,
    convert,
    described,
    form_of,
    is_broker_url,
    shown,
    tls_context,
    var_name,
)

__all__ = ["DEFAULT_WEIGHTS", "PREFIX", "ConfigError", "Settings"]  # the rules' names too


@dataclass(frozen=True)
class Settings:
    # name: (default, help) lives in the field metadata so docs and code cannot drift.
    broker_url: str = field(default="", metadata={
        "help": "Kafka bootstrap URL, e.g. kafka://host:9092 (empty: `recstream dev` starts the embedded broker)",
        "valid": is_broker_url, "form": "empty or kafka://host:port, more host:port after commas (no other scheme)"})
    app_id: str = field(default="recstream", metadata={"help": "faust app id (consumer group, changelog topic prefix)"})
    topic_prefix: str = field(default="", metadata={
        "help": "prefix for every topic, changelog and consumer group name (isolates environments on one cluster)"})
    partitions: int = field(default=4, metadata={
        "help": "partitions for topics recstream creates", "min": 1, "max": MAX_PARTITIONS})
    data_dir: str = field(default="data", metadata={
        "help": "local state directory (RocksDB tables, in a folder per app id: <data dir>/<app id>)", **DIRECTORY})
    web_host: str = field(default="127.0.0.1", metadata={"help": "HTTP bind host"})
    web_port: int = field(default=6066, metadata={"help": "HTTP port", "min": 1, "max": 65535})
    web_advertise_host: str = field(default="", metadata={
        "help": "host other workers use to reach this one (default: web_host; for 0.0.0.0, ::, the hostname)", **HOST})
    half_life_days: float = field(default=30.0, metadata={
        "help": "affinity half-life in event time (days)", "above": 0})
    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS, metadata={
        "help": "signal weights, e.g. view=1,save=3,follow=5 (unlisted kinds keep defaults)", "min": 0})
    top_k_artists: int = field(default=256, metadata={"help": "artists kept per user (bounded state)", "min": 1})
    dedup_window: int = field(default=2048, metadata={"min": 1, "help": "messageIds remembered per user: a duplicate "
        "within a user's last N messages is applied once"})
    dedup_horizon_s: float = field(default=3600.0, metadata={
        "help": "a user's messageIds applied in the last this many seconds (the worker's clock) are remembered too, "
        "past the window, up to 16,384: copies of a message that reach a user by two paths (keyed and not, or one "
        "that waited for its artwork) far apart in a backlog count once (0: the window alone)", "min": 0})
    max_event_bytes: int = field(default=65536, metadata={"help": "larger messages are dead-lettered", "min": 1})
    max_future_skew_s: float = field(default=86400.0, metadata={
        "help": "events stamped further ahead than this of when they reached Kafka (never later than the wall clock) "
        "are dead-lettered (invalid_timestamp): a far-future event would move a user's reference time", "min": 0})
    min_event_year: int = field(default=2000, metadata={
        "help": "events stamped before January 1 of this year (UTC) are dead-lettered (invalid_timestamp): a "
        "producer with an unset clock", "min": 1970, "max": 9999})
    event_map: str = field(default="", metadata={
        "help": "extra event names -> signal kind, JSON object or @file.json (merged over the defaults)",
        "form": "a JSON object {eventName: kind} or @file.json"})
    unknown_artwork_patience_s: float = field(default=60.0, metadata={
        "help": "an event naming an artwork the catalog does not know yet is retried (backoff 0.5 s doubling) until "
        "the catalog, as the group applied it, is read this far past the event: then dead-lettered (a worker "
        "behind on the catalog waits); covers catalog updates that land after the event, and rebuilds", "min": 0})
    unmapped_events: str = field(default="dead-letter", metadata={
        "help": "what to do with track events missing from the event map: dead-letter or ignore",
        "choices": ("dead-letter", "ignore")})
    affinity_update_top_n: int = field(default=20, metadata={
        "help": "artists listed in each affinity.updates record", "min": 1})
    experiment: str = field(default="recs", metadata={
        "help": "A/B experiment name; users are assigned by a stable hash of (experiment, user)"})
    variants: str = field(default="", metadata={
        "help": "variant parameters, JSON or @file.json, e.g. {\"A\": {\"share\": 0.5, \"trending_blend\": 0}, "
        "\"B\": {\"share\": 0.5, \"trending_blend\": 1, \"budget_filter\": true}} (default: A strict, B "
        "blend)", "form": "a JSON object {variant: {param: value}} or @file.json"})
    model_version: str = field(default="affinity-blend-1", metadata={"help": "written in every recommendations record"})
    trending_half_life_days: float = field(default=7.0, metadata={
        "help": "half-life of the trending score", "above": 0})
    batch_max: int = field(default=2000, metadata={
        "help": "records per batch at most (a user's events coalesce within a batch; batches are only this big when "
                "the input is behind, and fewer once batches take over 0.25 s: each holds the HTTP reads)", "min": 1})
    batch_within_ms: float = field(default=10.0, metadata={
        "help": "longest wait to fill a batch, milliseconds (adds to latency)", "min": 0})
    popularity_flush_s: float = field(default=1.0, metadata={
        "help": "how often a partition's trending/co-engagement and image-count shares are written while batches "
        "come (also before every input commit and rebalance; after a kill -9 the counts since the last write are "
        "recovered: docs/model.md)", "min": 0, "max": 3600})
    image_experiment: str = field(default="images", metadata={"help": "A/B experiment name for image selection"})
    image_variants: str = field(default="", metadata={
        "help": "image variants, JSON or @file.json: {\"A\": {\"share\": 0.5, \"explore\": 0}, \"B\": {\"share\": "
        "0.5, \"explore\": 0.01}} (explore = the multiplier C)",
        "form": "a JSON object {variant: {\"share\": number, \"explore\": number}}"})
    image_pool_items: int = field(default=5, metadata={
        "help": "top-selling items whose images join the header in a merchant's pool", "min": 0})
    image_filtered_categories: str = field(default="drinks,sides", metadata={
        "help": "item categories left out of pools unless the merchant mainly sells them"})
    image_prior_strength: float = field(default=20.0, metadata={
        "help": "the conversion-rate prior counts as this many impressions", "above": 0})
    image_query_boost: float = field(default=0.05, metadata={
        "help": "added to the score of images whose tags match a search query", "min": 0})
    image_half_life_days: float = field(default=30.0, metadata={
        "help": "half-life of global image impressions/conversions (0: no decay)", "min": 0})
    api_token: str = field(default="", metadata={
        "help": "when set, every HTTP request but /health and the collector (/v1/*, which checks "
                "RECSTREAM_WRITE_KEYS) needs `Authorization: Bearer <token>` (401 otherwise)",
        "secret": True})
    http_idle_timeout_s: float = field(default=75.0, metadata={
        "help": "the HTTP server closes a connection idle, or stalled in its request head, this long (above a load "
        "balancer's idle timeout: AWS ALB's is 60 s)", "min": 1, "max": 3600})
    attribution_days: float = field(default=7.0, metadata={
        "help": "experiments: an order, inquiry or save of a listed work counts for the list's variant within this "
        "many days of the exposure", "above": 0})
    http_exposures: bool = field(default=True, metadata={
        "help": "experiments: a list served by GET /recommendations is an exposure (at most one per user per "
        "RECSTREAM_EXPOSURE_FLUSH_S)"})
    exposure_flush_s: float = field(default=60.0, metadata={
        "help": "how often served lists are sent as exposures (each user at most once per interval)", "min": 0.1,
        "max": 86400})
    readout_interval_s: float = field(default=60.0, metadata={
        "help": "how often the experiments' counts are snapshot to experiments.readouts (the history `recstream "
        "experiments report --out` plots)", "min": 1, "max": 86400})
    write_keys: str = field(default="", metadata={
        "help": "write keys the Segment-compatible collector (POST /v1/batch, /v1/track, ...) accepts as the HTTP "
        "Basic user, comma-separated; empty accepts any key", "secret": True})
    kafka_security_protocol: str = field(default="PLAINTEXT", metadata={
        "help": "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
        "choices": ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")})
    kafka_sasl_mechanism: str = field(default="PLAIN", metadata={
        "help": "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", "choices": ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")})
    kafka_sasl_username: str = field(default="", metadata={"help": "SASL user"})
    kafka_sasl_password: str = field(default="", metadata={"help": "SASL password", "secret": True})
    kafka_ssl_cafile: str = field(default="", metadata={"help": "CA bundle (default: the system's)", **TLS_FILE})
    kafka_ssl_certfile: str = field(default="", metadata={"help": "client certificate (mutual TLS)", **TLS_FILE})
    kafka_ssl_keyfile: str = field(default="", metadata={"help": "client key (mutual TLS)", **TLS_FILE})
    rocksdb_write_buffer_mb: int = field(default=4, metadata={
        "help": "RocksDB memtable size per partition store (faust's default is 64 MB, times ~40 stores)", "min": 1,
        "max": 65536})
    rocksdb_cache_mb: int = field(default=32, metadata={
        "help": "RocksDB memory budget of the whole worker: one block cache shared by every store, holding index and"
        " filter blocks, charged for memtables (32 and 64 MB gave the same throughput)", "min": 1, "max": 1 << 20})
    hot_lists_mb: int = field(default=8, metadata={"help": "memory for the lists this worker wrote or served lately,"
        " so their next GET /recommendations skips RocksDB (0: none)", "min": 0, "max": 1 << 20})
    fetch_max_wait_ms: int = field(default=500, metadata={
        "help": "longest a fetch of faust's consumer thread waits for data: with direct ingest it reads only the "
        "global tables' changelogs and recovery (a short wait costs the HTTP reads GIL hand-offs); without, it reads "
        "the inputs with RECSTREAM_INGEST_FETCH_MAX_WAIT_MS", "min": 0, "max": MAX_FETCH_WAIT_MS})
    ingest_fetch_max_wait_ms: int = field(default=20, metadata={
        "help": "longest a direct-ingest fetch of the inputs waits for data while records come: the embedded broker "
        "answers late (~wait) even with data, so it bounds first-signal latency", "min": 0, "max": MAX_FETCH_WAIT_MS})
    ingest_idle_fetch_max_wait_ms: int = field(default=100, metadata={
        "help": "the same after 1 s without records: an idle worker fetches its inputs less often (half the idle "
        "CPU); the first record after a quiet spell may wait for it", "min": 0, "max": MAX_FETCH_WAIT_MS})
    event_loop: str = field(default="uvloop", metadata={
        "help": "the worker's event loop: uvloop (serving and the Kafka clients cost less) or aio (asyncio's)",
        "choices": ("uvloop", "aio")})
    python_malloc: str = field(default="pymalloc", metadata={
        "help": "a worker's allocator for Python objects (it re-executes itself with PYTHONMALLOC set): pymalloc ="
        " CPython's own, ~40% less CPU per event than glibc; malloc = glibc, whose freed memory malloc_trim hands"
        " back", "choices": ("malloc", "pymalloc")})
    max_poll_records: int = field(default=500, metadata={
        "help": "most records faust's consumer decodes per poll (faust: no limit, so table recovery held whole "
        "fetches at once and left pymalloc arenas pinned: +44 MB RSS after recovering 1M users)", "min": 1})
    malloc_arenas: int = field(default=2, metadata={
        "help": "glibc malloc arenas for the worker (0: glibc's default of 8 per core, which lets RSS grow with the"
        " data touched)", "min": 0, "max": 1024})
    malloc_mmap_threshold_kb: int = field(default=128, metadata={
        "help": "allocations from this size up get their own mapping, returned to the OS when freed (0: glibc's "
        "default, which raises the threshold after the first large free, so later fetch buffers fragment "
        "the heap: ~20 MB more RSS after recovering 1M users)", "min": 0, "max": 32768})
    changelog_buffer: int = field(default=5000, metadata={
        "help": "changelog records a worker may queue before it pauses delivery to let them drain (faust's default "
        "is 100: every batch of a few hundred events paused the pipeline, the largest share of its latency "
        "tail)", "min": 1})
    direct_ingest: bool = field(default=True, metadata={
        "help": "the input topics, the catalog and the internal ones (re-keyed signals, retries) are read in batches "
        "by a plain consumer inside the worker that follows faust's partition assignment (offsets in group <app id>-"
        "direct), not by faust's per-message delivery: ~2x the events/s, a fraction of the latency, and gapless "
        "delivery across rebalances. Off: faust agents read them, and faust's consumer can drop re-fetched records "
        "after a restart or rebalance: a kill -9 then loses events for good (docs/traps.md; not for production)"})
    single_hop: bool = field(default=True, metadata={
        "help": "ingest applies a signal itself when the input message already sits in the user's partition (input "
        "keyed by user id, same partition count): one hop instead of two. Off: every signal goes through "
        "the internal signals topic"})
    session_timeout: float = field(default=10.0, metadata={
        "help": "consumer-group session timeout, seconds (a rebalance waits about half; faust's request timeout "
        "is 90)", "min": 1, "max": 90})
    standby_replicas: int = field(default=0, metadata={
        "help": "faust's standby replicas per table partition (warm copies for a faster failover). 0 by default: a "
        "faust-streaming 0.15 standby stores only the records written after it started and records the changelog's"
        " end, so its promotion loses the earlier ones for good (docs/traps.md)", "min": 0})
    true_end_offsets: bool = field(default=True, metadata={
        "help": "table recovery takes each changelog's end from a fetch, not ListOffsets (the embedded Tansu broker"
        " under-reports the end when the last batch holds several records); harmless on Apache Kafka"})
    bulk_restore_min: int = field(default=2000, metadata={"min": 0, "help": "a table partition with at least this "
        "many changelog records to restore is copied in bulk, then faust's recovery reads the rest (0: faust's only)"})
    single_record_batches: bool = field(default=False, metadata={
        "help": "one record per produce batch: the older, slow workaround for the same Tansu bug"})
    rebuild_shards: int = field(default=0, metadata={
        "help": "processes of a `recstream rebuild --bulk` (0: one per CPU, at most one per partition)", "min": 0})
    input_commit_interval_s: float = field(default=2.8, metadata={
        "help": "how often direct ingest commits the input offsets it applied (after every output and changelog "
        "record they produced is acknowledged); a crash re-reads what came after, which the per-user input "
        "offsets skip", "above": 0, "max": 3600})
    list_window_ms: int = field(default=500, metadata={
        "help": "direct ingest builds a user's recommendations list at most once per this many ms: the first at once, "
        "a busy user's next changes as one list when the window ends (all before their input offsets are "
        "committed); the HTTP read can be this much behind the affinity (0: every change at once)", "min": 0})
    clock: str = field(default="wall", metadata={
        "help": "what now is for recommendations (recency window, trending, refreshes): wall = the wall clock; "
        "event = the newest event time seen, to replay old history as of its own time (backtests)",
        "choices": ("wall", "event")})
    refresh_interval_s: float = field(default=3600.0, metadata={
        "help": "every this many seconds each worker rebuilds the lists of the users it owns, so they stay fresh "
        "without the users' events (works age out, sell, trending moves); only changed lists are written "
        "and sent (0: off)", "min": 0})
    refresh_rate: float = field(default=1000.0, metadata={
        "help": "users per second a refresh pass rebuilds at most (bounds its CPU: ~50 us a user)", "min": 1})
    log_level: str = field(default="info", metadata={"help": "worker log level, any case (and warning, critical)",
                                                       "choices": ("crit", "error", "warn", "info", "debug")})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values = {f.name: convert(f, env[var_name(f)]) for f in fields(cls) if env.get(var_name(f))}  # "": unset
        if "log_level" in values:  # any case (WARNING was refused); faust's CLI: warn, crit
            values["log_level"] = {"warning": "warn", "critical": "crit"}.get(v := values["log_level"].lower(), v)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Each field's rule (metadata: min, above, max, choices; floats finite), then the checks
        that span fields. Every message starts with the variable's name."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not all(accepts(f.metadata, v) for v in (value.values() if isinstance(value, Mapping) else [value])):
                raise ConfigError(f"{var_name(f)} must be {form_of(f)}, got {shown(f, value)}")
        check_together(self)

    @property
    def half_life_seconds(self) -> float:
        return self.half_life_days * 86400.0

    @property
    def advertised_host(self) -> str:
        """Host other workers use for routed HTTP reads: explicit, else the bind host, and
        for a wildcard bind (containers) this machine's hostname."""
        if self.web_advertise_host:
            return self.web_advertise_host
        return socket.gethostname() if self.web_host in ("0.0.0.0", "::") else self.web_host

    def __repr__(self) -> str:  # never print secrets
        return f"Settings({', '.join(f'{f.name}={shown(f, getattr(self, f.name))}' for f in fields(self))})"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def kafka_app_id(self) -> str:
        """The app id in Kafka's names (groups, changelogs): prefixed, keeping environments apart."""
        return self.topic(self.app_id)

    def internal_topic(self, name: str) -> str:
        """Topics owned by one app id (a rebuild under a new id reads only its own)."""
        return f"{self.kafka_app_id}.{name}"

    def aiokafka_kwargs(self) -> dict:
        """Connection settings for recstream's own aiokafka clients (bootstrap + SASL/SSL); the
        faust app gets the same from `streams.worker.app.broker_credentials`."""
        kwargs: dict = {"bootstrap_servers": bootstrap_servers(self.broker_url)}
        if self.kafka_security_protocol != "PLAINTEXT":
            kwargs.update(security_protocol=self.kafka_security_protocol, ssl_context=tls_context(self))
        if self.kafka_security_protocol.startswith("SASL"):
            kwargs.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_sasl_username,
                          sasl_plain_password=self.kafka_sasl_password)
        return kwargs

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(env var, default, help) for every setting: the README table and `recstream config`."""
        return described(fields(cls))
