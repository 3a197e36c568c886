import pytest

from streams.core.settings import ConfigError, Settings


def test_defaults_without_environment():
    s = Settings.from_env({})
    assert s.broker_url == "" and s.half_life_days == 30.0 and s.partitions == 4
    assert s.weights == {"view": 1.0, "save": 3.0, "follow": 5.0, "collection": 5.0, "inquiry": 8.0, "order": 12.0}
    assert s.single_record_batches is False and s.true_end_offsets is True


def test_values_are_parsed_and_typed():
    s = Settings.from_env({"RECSTREAM_PARTITIONS": "12", "RECSTREAM_SINGLE_RECORD_BATCHES": "true",
                           "RECSTREAM_WEIGHTS": "view=0.5, order=20", "RECSTREAM_TOPIC_PREFIX": "stg."})
    assert s.partitions == 12 and s.single_record_batches is True
    assert s.weights["view"] == 0.5 and s.weights["order"] == 20.0 and s.weights["save"] == 3.0
    assert s.topic("deadletter") == "stg.deadletter"
    assert s.half_life_seconds == 30 * 86400


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings.from_env({}).partitions = 3


@pytest.mark.parametrize("env,message", [
    ({"RECSTREAM_PARTITIONS": "many"}, "RECSTREAM_PARTITIONS='many' is not a valid int"),
    ({"RECSTREAM_HALF_LIFE_DAYS": "0"}, "HALF_LIFE_DAYS must be a finite number > 0"),
    ({"RECSTREAM_WEIGHTS": "likes=3"}, "expected kind=number"),
    ({"RECSTREAM_WEIGHTS": "view=lots"}, "is not a number"),
    ({"RECSTREAM_SINGLE_RECORD_BATCHES": "maybe"}, "not a valid bool"),
    ({"RECSTREAM_UNMAPPED_EVENTS": "drop"}, "dead-letter or ignore"),
    ({"RECSTREAM_LOG_LEVEL": "loud"}, "RECSTREAM_LOG_LEVEL must be one of"),
])
def test_bad_values_fail_clearly(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


BAD_VALUES = [
    ("WEIGHTS", "view=nan"), ("WEIGHTS", "order=inf"), ("WEIGHTS", "view=-5"),
    ("HALF_LIFE_DAYS", "nan"), ("HALF_LIFE_DAYS", "inf"), ("HALF_LIFE_DAYS", "1e999"), ("HALF_LIFE_DAYS", "-1"),
    ("TRENDING_HALF_LIFE_DAYS", "0"), ("IMAGE_HALF_LIFE_DAYS", "-1"), ("IMAGE_HALF_LIFE_DAYS", "nan"),
    ("UNKNOWN_ARTWORK_PATIENCE_S", "-inf"), ("POPULARITY_FLUSH_S", "nan"), ("IMAGE_QUERY_BOOST", "inf"),
    ("MAX_EVENT_BYTES", "-1"), ("BATCH_MAX", "0"), ("BATCH_WITHIN_MS", "-5"), ("SESSION_TIMEOUT", "0"),
    ("SESSION_TIMEOUT", "nan"), ("KAFKA_SASL_MECHANISM", "MD5"), ("IMAGE_PRIOR_STRENGTH", "-20"),
    ("PARTITIONS", "0"), ("ROCKSDB_CACHE_MB", "-1"), ("ROCKSDB_WRITE_BUFFER_MB", "0"), ("WEB_PORT", "0"),
    ("WEB_PORT", "65536"), ("TOP_K_ARTISTS", "0"), ("DEDUP_WINDOW", "-3"), ("AFFINITY_UPDATE_TOP_N", "0"),
    ("IMAGE_POOL_ITEMS", "-1"), ("FETCH_MAX_WAIT_MS", "-1"), ("INGEST_FETCH_MAX_WAIT_MS", "-1"),
    ("MALLOC_ARENAS", "-1"), ("MALLOC_MMAP_THRESHOLD_KB", "-1"), ("MALLOC_MMAP_THRESHOLD_KB", "99999"),
    ("CHANGELOG_BUFFER", "0"), ("REBUILD_SHARDS", "-1"), ("PYTHON_MALLOC", "jemalloc"), ("DIRECT_INGEST", "2"),
    ("VARIANTS", "{oops"), ("VARIANTS", "[]"), ("VARIANTS", '{"A": 1}'), ("VARIANTS", '{"A": {"share": "x"}}'),
    ("VARIANTS", "@/nonexistent/variants.json"), ("EVENT_MAP", "{"), ("EVENT_MAP", '{"Liked": "love"}'),
    ("EVENT_MAP", "@/nonexistent/map.json"), ("IMAGE_VARIANTS", "not json"), ("IMAGE_VARIANTS", "[1]"),
    ("IMAGE_VARIANTS", '{"A": {"share": "half"}}'), ("IMAGE_VARIANTS", '{"A": {"share": 0.3}}'),
    ("MAX_FUTURE_SKEW_S", "-1"), ("MAX_FUTURE_SKEW_S", "inf"), ("MIN_EVENT_YEAR", "1969"), ("MIN_EVENT_YEAR", "10000"),
    ("WEIGHTS", "view=0,save=0,follow=0,collection=0,inquiry=0,order=0"),  # no event counted, no list moved
    # a busy loop or "never": snapshots and exposure flushes every loop turn, connections closed at once or
    # held for ever, a refresh pass of a day a user, a commit never made
    ("READOUT_INTERVAL_S", "1e-9"), ("EXPOSURE_FLUSH_S", "0.001"), ("HTTP_IDLE_TIMEOUT_S", "1e-9"),
    ("HTTP_IDLE_TIMEOUT_S", "1e12"), ("REFRESH_RATE", "1e-5"), ("INPUT_COMMIT_INTERVAL_S", "1e12"),
    ("POPULARITY_FLUSH_S", "1e12"), ("READOUT_INTERVAL_S", "1e12"),
    ("ROCKSDB_CACHE_MB", str(1 << 44)), ("ROCKSDB_WRITE_BUFFER_MB", str(1 << 44)),  # OverflowError at assignment
    ("MALLOC_ARENAS", str(1 << 40)), ("HOT_LISTS_MB", str(1 << 44)),
    ("WEB_ADVERTISE_HOST", "http://w1:6066"), ("WEB_ADVERTISE_HOST", "w1:6066"),  # every forwarded read a 503
    ("INPUT_COMMIT_INTERVAL_S", "0"), ("CLOCK", "sundial"), ("REFRESH_INTERVAL_S", "-1"), ("REFRESH_RATE", "0"),
    ("VARIANTS", '{"A": {"share": 1, "ranking": "random"}}'), ("VARIANTS", '{"A": {"share": 1, "n": 0}}'),
    # fuzzing: schemes faust has no Kafka transport for passed, then the worker died in faust's transport.by_url
    ("PARTITIONS", "99999999999999999999999"), ("PARTITIONS", "10001"),  # fuzzing: the worker died on struct.error
    ("BROKER_URL", "http://127.0.0.1:39092"), ("BROKER_URL", "kafka://a:1,https://b:2"), ("BROKER_URL", "confluent://a:1"),
    # fuzzing: a missing TLS file surfaced as ssl's FileNotFoundError, naming neither the file nor its variable
    ("KAFKA_SSL_CAFILE", "/nonexistent/ca.pem"), ("KAFKA_SSL_CERTFILE", "/"), ("KAFKA_SSL_KEYFILE", "/nonexistent"),
    # an outside check: above faust's 90 s request timeout the worker crashed in faust (ImproperlyConfigured), and
    # a fetch wait past Kafka's int32 killed the fetcher at its first fetch while /health said ok
    ("SESSION_TIMEOUT", "120"), ("FETCH_MAX_WAIT_MS", "2147483648"), ("INGEST_FETCH_MAX_WAIT_MS", "2147483648"),
    ("INGEST_IDLE_FETCH_MAX_WAIT_MS", "2147483648"), ("INGEST_FETCH_MAX_WAIT_MS", "60001"),
    # a secrets file's newline made every request a 401; "," let the collector accept any key
    ("API_TOKEN", "s3cret\n"), ("API_TOKEN", " s3cret"), ("WRITE_KEYS", ","), ("WRITE_KEYS", " , "),
]


@pytest.mark.parametrize("name,value", BAD_VALUES)
def test_every_bad_value_is_rejected_in_one_line_that_names_the_variable(name, value):
    from streams.core.config import load_settings
    with pytest.raises(ConfigError) as caught:
        load_settings({f"RECSTREAM_{name}": value})
    message = str(caught.value)
    assert message.startswith(f"RECSTREAM_{name}") and "\n" not in message, message
    assert "must be" in message, message  # the accepted form


def test_an_at_file_that_opens_but_fails_to_read_is_named(tmp_path):
    """A read that fails after the open (EIO: /proc/self/mem) has no filename: the message said
    "cannot read None" (an outside fuzzer)."""
    from streams.core.config import load_settings
    with pytest.raises(ConfigError) as caught:
        load_settings({"RECSTREAM_EVENT_MAP": "@/proc/self/mem"})
    assert str(caught.value).startswith("RECSTREAM_EVENT_MAP: cannot read '/proc/self/mem' ("), str(caught.value)


def test_edge_values_that_mean_something_are_accepted(tmp_path):
    from streams.core.config import load_settings
    variants = tmp_path / "v.json"
    variants.write_text('{"A": {"share": 1}}')
    s = load_settings({"RECSTREAM_WEB_PORT": "65535", "RECSTREAM_PARTITIONS": "10000", "RECSTREAM_MALLOC_ARENAS": "0", "RECSTREAM_REBUILD_SHARDS": "0",
                       "RECSTREAM_IMAGE_HALF_LIFE_DAYS": "0", "RECSTREAM_BATCH_WITHIN_MS": "0",
                       "RECSTREAM_WEIGHTS": "view=0", "RECSTREAM_MALLOC_MMAP_THRESHOLD_KB": "0",
                       "RECSTREAM_IMAGE_POOL_ITEMS": "0", "RECSTREAM_VARIANTS": f"@{variants}",
                       "RECSTREAM_EVENT_MAP": '{"Liked": "save"}', "RECSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                       "RECSTREAM_IMAGE_VARIANTS": '{"A": {"share": 1, "explore": 0.1}}'})
    assert s.web_port == 65535 and s.malloc_arenas == 0 and s.weights["view"] == 0.0


def test_tls_files_that_hold_no_certificate_and_a_data_dir_that_is_a_file_are_named_at_start(tmp_path):
    """ssl's "[X509: NO_CERTIFICATE_OR_CRL_FOUND]" named neither the file nor its variable (at the first
    connection, not at start), and a data dir that is a file stopped the worker with "File exists"."""
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate\n")
    cases = {"KAFKA_SSL_CAFILE": {"RECSTREAM_KAFKA_SSL_CAFILE": str(not_pem)},
             "KAFKA_SSL_CERTFILE": {"RECSTREAM_KAFKA_SSL_CERTFILE": str(not_pem)},
             "DATA_DIR": {"RECSTREAM_DATA_DIR": str(not_pem)}}
    for name, env in cases.items():
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({"RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL", **env})
        assert str(caught.value).startswith(f"RECSTREAM_{name}") and str(not_pem) in str(caught.value)
        assert "\n" not in str(caught.value) and "must be" in str(caught.value)


def test_image_variants_come_from_an_at_file_as_the_recommendation_variants_do(tmp_path):
    """RECSTREAM_IMAGE_VARIANTS=@file.json was refused as "not valid JSON" while RECSTREAM_VARIANTS took it."""
    from streams.core.config import load_settings
    from streams.core.image_pipeline import load_image_variants

    spec = tmp_path / "images.json"
    spec.write_text('{"A": {"share": 0.3, "explore": 0}, "B": {"share": 0.7, "explore": 0.02}}')
    s = load_settings({"RECSTREAM_IMAGE_VARIANTS": f"@{spec}"})
    assert {v.name: (v.share, v.explore) for v in load_image_variants(s.image_variants).values()} == {
        "A": (0.3, 0.0), "B": (0.7, 0.02)}


def test_broker_urls_in_the_forms_faust_and_aiokafka_both_read_are_accepted():
    for url in ("kafka://h:9092", "KAFKA://h:9092", "aiokafka://h:9092", "h1:9092;h2:9092", "kafka://h1:1,h2:2",
                "[::1]:9092"):
        assert Settings.from_env({"RECSTREAM_BROKER_URL": url}).broker_url == url


def test_every_number_setting_has_a_range_rule():
    from dataclasses import fields
    for f in fields(Settings):
        if f.type in ("int", "float") or f.type.startswith("Mapping"):
            assert {"min", "above"} & f.metadata.keys(), f.name
        if "choices" in f.metadata:
            assert f.default in f.metadata["choices"], f.name


def test_advertised_host_for_wildcard_bind_is_the_hostname():
    import socket
    assert Settings.from_env({"RECSTREAM_WEB_HOST": "0.0.0.0"}).advertised_host == socket.gethostname()
    assert Settings.from_env({"RECSTREAM_WEB_ADVERTISE_HOST": "w1"}).advertised_host == "w1"


def test_every_setting_is_documented_in_the_configuration_doc():
    from pathlib import Path
    readme = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    for var, _default, _help in Settings.describe():
        assert f"`{var}`" in readme, var


def test_kafka_security_settings_and_secrets_are_not_printed():
    import ssl

    import faust

    from streams.worker.app import broker_credentials
    assert broker_credentials(Settings.from_env({})) is None
    sasl = Settings.from_env({"RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "RECSTREAM_KAFKA_SASL_USERNAME": "svc",
                              "RECSTREAM_KAFKA_SASL_PASSWORD": "pw", "RECSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"})
    creds = broker_credentials(sasl)
    assert isinstance(creds, faust.SASLCredentials) and creds.username == "svc" and creds.mechanism.value == "SCRAM-SHA-512"
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    plain = broker_credentials(Settings.from_env({"RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                                                  "RECSTREAM_KAFKA_SASL_USERNAME": "svc"}))
    assert plain.ssl_context is None
    assert isinstance(broker_credentials(Settings.from_env({"RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL"})), faust.SSLCredentials)
    # recstream's own aiokafka clients (direct ingest, rebuild) connect the same way
    assert Settings.from_env({"RECSTREAM_BROKER_URL": "kafka://k1:9093"}).aiokafka_kwargs() == {"bootstrap_servers": "k1:9093"}
    kwargs = sasl.aiokafka_kwargs()
    assert isinstance(kwargs.pop("ssl_context"), ssl.SSLContext)
    assert kwargs == {"bootstrap_servers": "", "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                      "sasl_plain_username": "svc", "sasl_plain_password": "pw"}
    assert Settings.from_env({"RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "RECSTREAM_KAFKA_SASL_USERNAME": "svc"}
                             ).aiokafka_kwargs()["ssl_context"] is None
    with pytest.raises(ConfigError, match="SASL_USERNAME is required"):
        Settings.from_env({"RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(ConfigError, match="SECURITY_PROTOCOL must be"):
        Settings.from_env({"RECSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"})
    text = repr(Settings.from_env({"RECSTREAM_API_TOKEN": "t0k3n-XYZ", "RECSTREAM_KAFKA_SASL_PASSWORD": "pa55-QQ",
                                   "RECSTREAM_KAFKA_SASL_USERNAME": "svc", "RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}))
    assert "t0k3n-XYZ" not in text and "pa55-QQ" not in text and "svc" in text and "api_token='***'" in text


def test_log_level_accepts_the_usual_spelling():
    assert Settings.from_env({"RECSTREAM_LOG_LEVEL": "warning"}).log_level == "warn"
    assert [Settings.from_env({"RECSTREAM_LOG_LEVEL": v}).log_level for v in ("WARNING", "Debug")] == ["warn", "debug"]


@pytest.mark.parametrize("name,value,says", [
    # fuzzing: each was accepted, or refused in Python's words instead of naming the problem
    ("VARIANTS", '{"A": {"share": -1}, "B": {"share": 2}}', "variant 'A': share must be a number from 0 to 1, got -1"),
    ("VARIANTS", '{"A": {"share": 1, "trending_blend": NaN}}', "trending_blend must be a number >= 0, got nan"),
    ("VARIANTS", '{"A": {"share": 1, "affinity_power": Infinity}}', "affinity_power must be a number >= 0, got inf"),
    ("VARIANTS", '{"A": {"share": 1, "window_days": -5}}', "window_days must be a number > 0, got -5"),
    ("VARIANTS", '{"": {"share": 1}}', "a variant's name must not be empty"),
    ("VARIANTS", '{"A": {"share": "x"}}', "variant 'A': share must be a number from 0 to 1, got 'x'"),
    ("VARIANTS", '{"A": 1}', "variant 'A' must be a JSON object {param: value}, got 1"),
    ("VARIANTS", '{"A": {"share": 1, "budget_filter": "yes"}}', "budget_filter must be true or false"),
    ("VARIANTS", '{"A": {"share": 1, "n": 2.5}}', "n must be an integer >= 1, got 2.5"),
    ("IMAGE_VARIANTS", '{"A": {"share": 1, "explore": -1}}', "variant 'A': explore must be a number >= 0, got -1"),
    ("IMAGE_VARIANTS", '[1]', "variants must be a non-empty JSON object"),
    ("IMAGE_VARIANTS", '{"A": {"share": "half"}}', "share must be a number from 0 to 1, got 'half'"),
    ("IMAGE_VARIANTS", '{"A": {"share": 1, "explor": 1}}', "unknown parameters ['explor']"),
    ("APP_ID", "a b", "RECSTREAM_APP_ID must be 1 to 200 of the characters a Kafka topic name takes"),
    ("APP_ID", "a/b", "RECSTREAM_APP_ID must be 1 to 200 of the characters a Kafka topic name takes"),
    ("TOPIC_PREFIX", "stg/", "RECSTREAM_TOPIC_PREFIX must be empty or the characters a Kafka topic name takes"),
    ("TOPIC_PREFIX", "p" * 300, "must be at most 200 characters together (Kafka's topic names end at 249), got 309"),
])
def test_values_past_their_meaning_are_refused_naming_the_problem(name, value, says):
    from streams.core.config import load_settings
    with pytest.raises(ConfigError) as caught:
        load_settings({f"RECSTREAM_{name}": value})
    message = str(caught.value)
    assert message.startswith(f"RECSTREAM_{name}") and "\n" not in message and says in message, message


def test_names_and_variants_at_their_edges_are_accepted():
    from streams.core.config import load_settings
    s = load_settings({"RECSTREAM_APP_ID": "a" * 190, "RECSTREAM_TOPIC_PREFIX": "stg.v-2_", "RECSTREAM_VARIANTS":
                       '{"A": {"share": 0, "trending_blend": 0}, "B": {"share": 1, "window_days": 0.5, "n": 1}}',
                       "RECSTREAM_IMAGE_VARIANTS": '{"A": {"share": 1, "explore": 0}}'})
    assert s.topic("x") == "stg.v-2_x" and len(s.kafka_app_id) == 198
