import pytest

from streams.settings import ConfigError, Settings


def test_defaults_without_environment():
    s = Settings.from_env({})
    assert s.broker_url == "" and s.half_life_days == 30.0 and s.partitions == 4
    assert s.weights == {"view": 1.0, "save": 3.0, "follow": 5.0, "collection": 5.0, "inquiry": 8.0, "order": 12.0}
    assert s.single_record_batches is True


def test_values_are_parsed_and_typed():
    s = Settings.from_env({"RECSTREAM_PARTITIONS": "12", "RECSTREAM_SINGLE_RECORD_BATCHES": "false",
                           "RECSTREAM_WEIGHTS": "view=0.5, order=20", "RECSTREAM_TOPIC_PREFIX": "stg."})
    assert s.partitions == 12 and s.single_record_batches is False
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
