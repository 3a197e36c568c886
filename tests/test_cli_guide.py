"""The CLI that guides (issue 16): help, config in the accepted form (round trip), one-line
errors for unreachable URLs, empty inputs, missing files and an unreachable broker, and the
demo-events catalog options. Each command runs as a real `recstream` process."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
from dataclasses import MISSING, fields
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from streams.cli.main import COMMANDS, setting_text
from streams.core.catalog import decode_artwork
from streams.core.config import load_settings
from streams.core.demo import DemoGenerator, DemoImages, dumps
from streams.core.image_pipeline import decode_image_catalog
from streams.core.settings import Settings

RECSTREAM = str(Path(sys.executable).with_name("recstream"))
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}


def run(
    *args: str, env: dict | None = None, cwd=None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RECSTREAM, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**CLEAN_ENV, **(env or {})},
        cwd=cwd,
    )


def one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """The result failed with `code` and exactly one line on stderr (no traceback)."""
    lines = result.stderr.splitlines()
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--help", "-h", "help"])
def test_help_lists_recstreams_own_commands_first_one_line_each(flag):
    result = run(flag)
    assert result.returncode == 0 and not result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "usage: recstream COMMAND [ARGS]..."
    listed = [line.split()[0] for line in lines if line.startswith("  ")]
    assert listed == [name for name, _ in COMMANDS]
    assert listed == [
        "dev",
        "demo-events",
        "broker",
        "config",
        "simulate-multiplier",
        "replay",
        "load",
        "rebuild",
        "emit-all",
        "experiments",
        "worker",
    ]
    faust = next(i for i, line in enumerate(lines) if line.startswith("faust's commands"))
    assert faust > max(i for i, line in enumerate(lines) if line.startswith("  "))
    assert "recstream worker --help" in result.stdout and "--faust-help" in result.stdout
    assert "Welcome" not in result.stdout  # not faust's help


def test_no_command_prints_the_help_as_a_usage_error():
    result = run()
    assert result.returncode == 2 and not result.stdout
    assert (
        result.stderr.startswith("usage: recstream COMMAND")
        and "simulate-multiplier" in result.stderr
    )


def test_help_works_even_with_a_bad_setting_and_faust_help_is_still_there():
    assert run("--help", env={"RECSTREAM_PARTITIONS": "abc"}).returncode == 0
    result = run("--faust-help")
    assert result.returncode == 0, result.stderr
    assert "Start worker instance" in result.stdout and "Usage: recstream" in result.stdout


# --- config ---------------------------------------------------------------------------------


def tls_files() -> dict[str, str]:
    """A CA and a client certificate and key it issued, as PEM files (the TLS settings are loaded at start)."""
    import tempfile

    import trustme

    folder, ca = Path(tempfile.mkdtemp(prefix="recstream-tls-")), trustme.CA()
    cert = ca.issue_cert("client.example")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    return {f"kafka_ssl_{name}": str(folder / f"{file}.pem") for name, file in
            (("cafile", "ca"), ("certfile", "cert"), ("keyfile", "key"))}


SPECIAL = {  # settings whose values must follow a format, and values that test shell quoting
    "broker_url": "kafka://broker-1:9092,broker-2:9092",
    "event_map": '{"Artwork Liked": "save", "it\'s $HOME #1": "ignore"}',
    "variants": '{"A": {"share": 0.25}, "B": {"share": 0.75, "personal_weight": 2.5}}',
    "image_variants": '{"A": {"share": 0.5, "explore": 0}, "B": {"share": 0.5, "explore": 0.03}}',
    "weights": "view=0.5,save=3.25,order=0.001,inquiry=1234567.125",
    "model_version": "model v2 # 'single' \"double\" $x `tick` \\ back",
    "image_filtered_categories": "drinks,desserts",
    "kafka_security_protocol": "SASL_SSL",
    "log_level": "warning",  # read as warn
    **tls_files(),
    "web_advertise_host": "worker-2.example",  # a host, no scheme or port
    "app_id": "app_id.v2-x",  # they name topics: Kafka's characters only
    "topic_prefix": "staging_2.",
}


def _default(f):
    return f.default_factory() if f.default is MISSING else f.default


def non_default_env() -> dict[str, str]:
    """A valid value different from the default for every setting."""
    env = {}
    for f in fields(Settings):
        default, rule = _default(f), f.metadata
        if f.name in SPECIAL:
            value = SPECIAL[f.name]
        elif f.type == "bool":
            value = "false" if default else "true"
        elif "choices" in rule:
            value = next(c for c in rule["choices"] if c != default)
        elif f.type == "int":
            value = str(min(rule.get("max", 10**9), default + 3))
        elif f.type == "float":
            value = repr(default * 1.5 + 0.123456789)
        else:
            value = f"{f.name} value"
        env[f"RECSTREAM_{f.name.upper()}"] = value
    return env


def parse_config(stdout: str) -> dict[str, str]:
    """`recstream config` output as a shell reads it: VAR=value words, comments dropped."""
    env = {}
    for line in stdout.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert len(words) == 1, line
            var, sep, value = words[0].partition("=")
            assert sep and var.startswith("RECSTREAM_"), line
            env[var] = value
    return env


@pytest.mark.parametrize("which", ["defaults", "every setting changed"])
def test_config_prints_values_that_read_back_to_the_same_settings(which):
    env = {} if which == "defaults" else non_default_env()
    want = load_settings(env)
    if env:  # the test covers every setting
        assert all(getattr(want, f.name) != _default(f) for f in fields(Settings))
    result = run("config", "--show-secrets", env=env)
    assert result.returncode == 0, result.stderr
    printed = parse_config(result.stdout)
    assert set(printed) == {f"RECSTREAM_{f.name.upper()}" for f in fields(Settings)}
    assert Settings.from_env(printed) == want
    again = run("config", "--show-secrets", env=printed)  # fed back through the environment
    assert again.returncode == 0 and again.stdout == result.stdout


def test_config_prints_weights_in_the_accepted_form_and_hides_secrets():
    result = run(
        "config",
        env={
            "RECSTREAM_WEIGHTS": "view=2",
            "RECSTREAM_API_TOKEN": "s3cret-token",
            "RECSTREAM_HALF_LIFE_DAYS": "7",
        },
    )
    assert result.returncode == 0, result.stderr
    assert (
        "\nRECSTREAM_WEIGHTS=view=2,save=3,follow=5,collection=5,inquiry=8,order=12    # "
        in result.stdout
    )
    assert "\nRECSTREAM_HALF_LIFE_DAYS=7.0    # " in result.stdout
    assert (
        "s3cret-token" not in result.stdout
        and "# RECSTREAM_API_TOKEN is set (hidden" in result.stdout
    )
    assert "RECSTREAM_API_TOKEN" not in parse_config(result.stdout)
    assert setting_text({"view": 0.1, "save": 1e-7}) == "view=0.1,save=1e-07"
    assert setting_text(True) == "true" and setting_text(1 / 3) == repr(1 / 3)


# --- simulate-multiplier: unreachable URLs and empty inputs ---------------------------------


@pytest.mark.parametrize(
    "url,fragment",
    [
        ("http://127.0.0.1:1", "cannot reach http://127.0.0.1:1/images/stats"),
        ("127.0.0.1:1", "cannot reach http://127.0.0.1:1/images/stats"),  # host:port is taken as http://
        ("ftp://127.0.0.1:1", "is not an http:// URL"),
    ],
)
def test_simulate_from_an_unreachable_worker_is_one_line_and_exit_2(url, fragment, tmp_path):
    result = run("simulate-multiplier", "--from-worker", url, cwd=tmp_path)
    one_line_error(result, 2, "recstream simulate-multiplier:", fragment)
    assert not result.stdout and not list(tmp_path.iterdir())  # no table, no plot


def test_simulate_from_a_worker_that_answers_401_names_the_token(tmp_path):
    class Unauthorized(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run(
            "simulate-multiplier",
            "--from-worker",
            f"http://127.0.0.1:{server.server_port}/",
            cwd=tmp_path,
        )
    finally:
        server.shutdown()
    one_line_error(result, 2, "answered HTTP 401", "RECSTREAM_API_TOKEN")


def test_simulate_without_image_events_says_so_instead_of_a_table(tmp_path):
    events, catalog, pools = (
        tmp_path / "e.jsonl",
        tmp_path / "c.jsonl",
        DemoImages(merchants=4).catalog(),
    )
    events.write_bytes(
        b"\n".join(dumps(e) for e in DemoGenerator(users=5, seed=1).events(30)) + b"\n"
    )
    catalog.write_bytes(b"\n".join(dumps(c) for c in pools) + b"\n")
    result = run(
        "simulate-multiplier", "--events", str(events), "--catalog", str(catalog), cwd=tmp_path
    )
    assert result.returncode == 2 and not result.stdout and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"recstream simulate-multiplier: no image impressions or "
        f"conversions in {events}: nothing to simulate"
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    result = run(
        "simulate-multiplier", "--events", str(empty), "--catalog", str(catalog), cwd=tmp_path
    )
    one_line_error(result, 2, "no image impressions or conversions")
    image_events = tmp_path / "ie.jsonl"
    image_events.write_bytes(b"\n".join(dumps(e) for e in DemoImages(merchants=4).events(200)))
    result = run(
        "simulate-multiplier", "--events", str(image_events), "--catalog", str(empty), cwd=tmp_path
    )
    one_line_error(result, 2, f"no merchant in {empty} has a pool of two or more images")
    result = run(
        "simulate-multiplier", "--events", str(tmp_path / "nope.jsonl"), "--catalog", str(catalog)
    )
    one_line_error(result, 2, "nope.jsonl: No such file or directory")


# --- load / replay: errors before anything is sent -------------------------------------------


def test_load_and_replay_fail_in_one_line_on_missing_files_and_unreachable_brokers(tmp_path):
    good = tmp_path / "a.jsonl"
    good.write_bytes(dumps(DemoGenerator(users=2, artworks=3).artworks()[0]) + b"\n")
    broker = {"RECSTREAM_BROKER_URL": "kafka://127.0.0.1:1"}
    one_line_error(
        run("load", "artworks", str(tmp_path / "missing.jsonl"), env=broker),
        2,
        f"recstream load: {tmp_path / 'missing.jsonl'}: no such file",
    )
    one_line_error(run("load", "images", str(tmp_path), env=broker), 2, "not a file")
    one_line_error(
        run("replay", str(tmp_path / "x.jsonl.gz"), env=broker),
        2,
        "recstream replay:",
        "no such file",
    )
    one_line_error(run("load", "curated", str(good)), 2, "RECSTREAM_BROKER_URL is not set")
    for command in (["load", "artworks"], ["replay"]):
        one_line_error(
            run(*command, str(good), env=broker),
            2,
            "the broker did not answer",
            "RECSTREAM_BROKER_URL",
        )
    usage = run("load", "paintings", str(good), env=broker)
    assert usage.returncode == 2 and "invalid choice: 'paintings'" in usage.stderr


# --- demo-events -----------------------------------------------------------------------------


def test_demo_events_prints_the_matching_curated_list_and_image_catalogs():
    curated = run("demo-events", "--curated", "--artworks", "120")
    artworks = run("demo-events", "--catalog", "--artworks", "120")
    assert curated.returncode == 0 and artworks.returncode == 0
    (line,) = curated.stdout.splitlines()
    ids = json.loads(line)["artwork_ids"]
    assert ids == DemoGenerator(artworks=120).curated()["artwork_ids"] and len(ids) == 8
    assert set(ids) <= {decode_artwork(row.encode()).id for row in artworks.stdout.splitlines()}

    images = run("demo-events", "--images", "--merchants", "6", "--seed", "3")
    catalogs = [decode_image_catalog(row.encode()) for row in images.stdout.splitlines()]
    assert [c.merchant_id for c in catalogs] == [f"m{i}" for i in range(6)]
    events = run(
        "demo-events", "--image-events", "--merchants", "6", "--seed", "3", "--events", "50"
    )
    rows = [json.loads(row) for row in events.stdout.splitlines()]
    assert sum(r["event"] == "Image Impression" for r in rows) == 50
    pools = {c.merchant_id: {i.image_id for i in c.images} for c in catalogs}
    assert all(r["properties"]["image_id"] in pools[r["properties"]["merchant_id"]] for r in rows)

    fixed = run("demo-events", "--users", "20", "--events", "5", "--seed", "3", "--end", "2026-10-31T00:00:00Z")
    assert [json.loads(x) for x in fixed.stdout.splitlines()] == list(
        DemoGenerator(users=20, seed=3, end_time=datetime(2026, 10, 31, tzinfo=timezone.utc)).events(5)
    )
    both = run("demo-events", "--curated", "--images")
    assert both.returncode == 2 and "not allowed with" in both.stderr
