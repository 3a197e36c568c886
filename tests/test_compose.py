"""docker-compose.yml structure (no Docker engine runs here, so we check the file itself)."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_kraft_kafka():
    services = COMPOSE["services"]
    assert {"kafka", "topics", "worker"} <= services.keys()
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert "healthcheck" in kafka


def test_worker_is_scalable_and_configured_by_environment():
    worker = COMPOSE["services"]["worker"]
    assert "container_name" not in worker  # --scale worker=N must work:
    (published,) = worker["ports"]  # a host port range, one port per replica, onto the HTTP port
    address, ports, container = published.split(":")
    low, _, high = ports.partition("-")
    assert container == "6066" and int(high) - int(low) >= 3
    assert address == "127.0.0.1"  # open by default (no token, no write keys): loopback only
    env = worker["environment"]
    assert env["RECSTREAM_BROKER_URL"] == "kafka://kafka:9092"
    assert env["RECSTREAM_WEB_HOST"] == "0.0.0.0"
    assert env["RECSTREAM_TRUE_END_OFFSETS"] == "true"
    assert "/health" in " ".join(worker["healthcheck"]["test"])
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert (ROOT / "Dockerfile").exists()


def test_a_worker_that_exits_is_restarted_in_place():
    """A worker fenced out of its group exits 75 and counts on a restart with its data dir
    (streams.worker.fence); so do the stop deadline's exit 70 and a broker gone at start."""
    worker = COMPOSE["services"]["worker"]
    assert worker["restart"] in ("unless-stopped", "always", "on-failure")
    assert "/data" in worker["volumes"] or any(v.endswith(":/data") for v in worker["volumes"])
    assert worker["environment"]["RECSTREAM_DATA_DIR"] == "/data"


def test_worker_env_uses_only_known_settings():
    from streams.core.settings import Settings
    known = {var for var, _, _ in Settings.describe()}
    assert set(COMPOSE["services"]["worker"]["environment"]) <= known


def test_topics_job_creates_every_topic_with_compacted_catalog():
    script = COMPOSE["services"]["topics"]["command"][0]
    from streams.core.records import SIGNAL_KINDS
    for name in ["events.segment", "recstream.signals.keyed", "affinity.updates", "recommendations", "deadletter",
                 "images.impressions", "images.conversions", "images.requests", "recstream.images.keyed",
                 "images.chosen", "images.replies", *(f"signals.{k}" for k in SIGNAL_KINDS)]:
        assert name in script, name
    # an outside check: Kafka's default retention (7 days) kept a week of inputs, and a rebuild read only that
    inputs = re.search(r"for t in (.*?); do\s+create \"\$\$t\" 12 --config retention.ms=-1", script).group(1).split()
    assert set(inputs) == {"events.segment", "images.impressions", "images.conversions", "images.requests",
                           *(f"signals.{k}" for k in SIGNAL_KINDS)}
    assert "create recommendations 12 --config cleanup.policy=compact" in script  # each user's latest list
    assert "create catalog.artworks 12 --config cleanup.policy=compact" in script
    assert "create catalog.curated 12 --config cleanup.policy=compact" in script
    assert "create catalog.images 12 --config cleanup.policy=compact" in script


def test_image_runs_as_a_non_root_user_owning_its_data_dir():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert lines.index(f"USER {users[-1]}") > lines.index("VOLUME /data")
    assert any(f"chown {users[-1]} /data" in line for line in lines)


def test_the_topics_job_creates_every_topic_the_worker_declares():
    """The job lacked recstream.pending (the worker creates its topics too, so nothing broke: a newcomer's check)."""
    import re

    from streams.worker.topics import declared

    names = set(declared())
    script = COMPOSE["services"]["topics"]["command"][0]
    created = {t for loop in re.findall(r"for t in (.*?); do", script) for t in loop.split()}
    created |= set(re.findall(r"create (\S+) 12", script))
    assert names and names <= created, sorted(names - created)
