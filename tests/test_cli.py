import json
import subprocess
import sys

from streams.demo import DemoGenerator


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_demo_events_is_seeded_jsonl():
    out = run("demo-events", "--users", "20", "--events", "50", "--seed", "3")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 50
    assert lines == list(DemoGenerator(users=20, seed=3).events(50))
    assert run("demo-events", "--users", "20", "--events", "50", "--seed", "3").stdout == out.stdout


def test_demo_catalog():
    out = run("demo-events", "--catalog", "--artworks", "30")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 30 and {"id", "artist_id", "published_at", "availability", "is_merch"} <= rows[0].keys()


def test_config_lists_every_setting_and_rejects_bad_values():
    out = run("config")
    assert out.returncode == 0 and "RECSTREAM_HALF_LIFE_DAYS=30.0" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "streams.cli", "config"], capture_output=True, text=True,
                         env={"RECSTREAM_PARTITIONS": "x", "PATH": ""}, timeout=60)
    assert bad.returncode != 0 and "RECSTREAM_PARTITIONS='x' is not a valid int" in bad.stderr
