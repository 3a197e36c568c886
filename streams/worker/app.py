"""The one faust App. Settings come from RECSTREAM_* variables (streams.core.settings)."""

from __future__ import annotations

from pathlib import Path

import faust

from streams.core.clock import Clock
from streams.core.config import core_objects
from streams.core.internal import Checked
from streams.core.records import decode_image_keyed, decode_keyed
from streams.core.setting_rules import tls_context
from streams.core.settings import Settings

settings = Settings.from_env()


def broker_credentials(s: Settings):
    """faust credentials from RECSTREAM_KAFKA_* (None for PLAINTEXT)."""
    if s.kafka_security_protocol == "PLAINTEXT":
        return None
    context = tls_context(s)
    if s.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(username=s.kafka_sasl_username, password=s.kafka_sasl_password,
                                 mechanism=s.kafka_sasl_mechanism, ssl_context=context)


app = faust.App(
    settings.kafka_app_id,
    broker=settings.broker_url or "kafka://127.0.0.1:9092",  # faust's other commands (a worker needs the setting)
    store="rocksdb://",
    datadir=str(Path(settings.data_dir) / settings.kafka_app_id),  # one app id's tables never open another's
    web_host=settings.advertised_host,
    web_bind=settings.web_host,
    web_port=settings.web_port,
    topic_partitions=settings.partitions,
    # Everything on the wire is bytes we encode ourselves with msgspec: no faust codecs.
    key_serializer="raw",
    value_serializer="raw",
    broker_session_timeout=settings.session_timeout,
    broker_heartbeat_interval=max(settings.session_timeout / 10, 0.5),
    broker_rebalance_timeout=max(settings.session_timeout, 10.0),
    broker_max_poll_records=settings.max_poll_records,  # bounds table recovery's heap (see the setting)
    # Tansu's ListOffsets bug is handled in recovery (streams.kafka.offsets.true_end_offsets);
    # single-record batches are the older, slower workaround, kept as an option.
    producer_max_batch_size=1 if settings.single_record_batches else 16384,
    web_enabled=True,
    # faust's own pages: /table/{table}/{key}/ dumped a stored value (a profile's message ids) to anyone,
    # /router/ every worker's URL and partitions; recstream's API is documented in docs/http-api.md
    web_tables_enabled=False,
    web_router_enabled=False,
    broker_credentials=broker_credentials(settings),
    logging_config=None,
    table_standby_replicas=settings.standby_replicas,  # 0 by default: see the setting
)


def _image_config():
    from streams.core.image_pipeline import ImageConfig, load_image_variants
    from streams.core.images import PoolRules, SelectionParams

    categories = frozenset(c.strip() for c in settings.image_filtered_categories.split(",") if c.strip())
    return ImageConfig(
        variants=load_image_variants(settings.image_variants), experiment=settings.image_experiment,
        params=SelectionParams(prior_strength=settings.image_prior_strength, query_boost=settings.image_query_boost),
        rules=PoolRules(top_items=settings.image_pool_items, filtered_categories=categories),
        half_life_s=settings.image_half_life_days * 86400.0, dedup_window=settings.dedup_window,
        dedup_horizon_s=settings.dedup_horizon_s)


affinity_model, parser_config, pipeline_config = core_objects(settings)
# internal records decoded with the inputs' time rule (streams.core.internal)
keyed_records = Checked(decode_keyed, parser_config.max_future_s)
keyed_images = Checked(decode_image_keyed, parser_config.max_future_s)
clock = Clock(settings.clock)  # what "now" is for lists: the wall clock, or event time (backtests)
image_config = _image_config()
