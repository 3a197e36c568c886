import pytest

from streams.settings import ConfigError, Settings


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
    ({"RECSTREAM_HALF_LIFE_DAYS": "0"}, "HALF_LIFE_DAYS must be > 0"),
    ({"RECSTREAM_WEIGHTS": "likes=3"}, "expected kind=number"),
    ({"RECSTREAM_WEIGHTS": "view=lots"}, "is not a number"),
    ({"RECSTREAM_SINGLE_RECORD_BATCHES": "maybe"}, "not a valid bool"),
    ({"RECSTREAM_UNMAPPED_EVENTS": "drop"}, "dead-letter or ignore"),
    ({"RECSTREAM_LOG_LEVEL": "loud"}, "RECSTREAM_LOG_LEVEL must be one of"),
])
def test_bad_values_fail_clearly(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_advertised_host_for_wildcard_bind_is_the_hostname():
    import socket
    assert Settings.from_env({"RECSTREAM_WEB_HOST": "0.0.0.0"}).advertised_host == socket.gethostname()
    assert Settings.from_env({"RECSTREAM_WEB_ADVERTISE_HOST": "w1"}).advertised_host == "w1"


def test_every_setting_is_documented_in_the_readme():
    from pathlib import Path
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for var, _default, _help in Settings.describe():
        assert f"`{var}`" in readme, var


def test_kafka_security_settings_and_secrets_are_not_printed():
    import ssl

    import faust

    from streams.app import broker_credentials
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
