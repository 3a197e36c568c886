"""How a RECSTREAM_* value is read and checked (pure): the declarative rules a Settings field
carries in its metadata (range, choices, finiteness, form), conversion from text, and the one-line
error that names the variable and what it accepts."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, Field
from types import MappingProxyType

PREFIX = "RECSTREAM_"


DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"view": 1.0, "save": 3.0, "follow": 5.0, "collection": 5.0, "inquiry": 8.0, "order": 12.0}
)


# Every topic recstream creates (~30, with the changelogs) gets RECSTREAM_PARTITIONS partitions, and a
# worker opens a RocksDB store per table partition it owns. Kafka's guidance is a few thousand
# partitions per broker, so more than 10,000 per topic is a typo, not a cluster (an unbounded value
# passed, then the worker died in struct.error encoding it in CreateTopics' 32-bit field).
MAX_PARTITIONS = 10_000
MAX_FETCH_WAIT_MS = 60_000  # Kafka's field is an int32: 2^31 ms killed the fetcher at its first fetch, silently


class ConfigError(ValueError):
    """A RECSTREAM_* variable has a value we cannot use; the message is one line that starts with
    the variable's name and says what it accepts (`recstream` prints it and exits 2)."""


def parse_weights(text: str) -> dict[str, float]:
    weights = dict(DEFAULT_WEIGHTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, value = part.partition("=")
        if not sep or kind.strip() not in DEFAULT_WEIGHTS:
            raise ConfigError(f"RECSTREAM_WEIGHTS: expected kind=number with kind in {sorted(DEFAULT_WEIGHTS)}, "
                              f"got {part!r}")
        try:
            weights[kind.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"RECSTREAM_WEIGHTS: {part!r} is not a number") from None
    return weights


def var_name(f: Field) -> str:
    return PREFIX + f.name.upper()


def shown(f: Field, value) -> str:
    if isinstance(value, Mapping):
        value = dict(value)
    return "'***'" if f.metadata.get("secret") and value else repr(value)


def one_of(choices) -> str:
    *rest, last = choices
    return f"one of {', '.join(rest)} or {last}" if len(rest) > 1 else f"{rest[0]} or {last}"


def form_of(f: Field) -> str:
    rule = f.metadata
    if "form" in rule:
        return rule["form"]
    if "choices" in rule:
        return one_of(rule["choices"])
    if f.type == "bool":
        return "a boolean (true/false, 1/0, yes/no, on/off)"
    if f.type == "str":
        return "any text"
    number = "an integer" if f.type == "int" else "a finite number"
    if "max" in rule and "above" in rule:
        number += f" > {rule['above']} and at most {rule['max']}"
    elif "max" in rule:
        number += f" from {rule['min']} to {rule['max']}"
    elif "min" in rule:
        number += f" >= {rule['min']}"
    elif "above" in rule:
        number += f" > {rule['above']}"
    if f.type.startswith("Mapping"):
        return f"kind=weight,... with kind {one_of(DEFAULT_WEIGHTS)} and each weight {number}"
    return number


# faust's transports that reach Kafka through aiokafka (recstream's own clients use it too); any other
# scheme passed the check, then the worker died in faust's transport lookup (confluent:// needs a
# library we do not install)
BROKER_SCHEMES = ("kafka", "aiokafka")


def is_broker_url(url: str) -> bool:
    """Empty, or host:port entries separated by commas (or semicolons), each with an optional
    scheme kafka:// (or aiokafka://), each port from 1 to 65535.

    >>> [is_broker_url(u) for u in ("", "kafka://h:9092/", "kafka://a.b:1,kafka://c-d:2", "[::1]:9092")]
    [True, True, True, True]
    >>> [is_broker_url(u) for u in ("kafka://h:notaport", "kafka://[bad", "h:99999", "kafka://:9092", "h")]
    [False, False, False, False, False]
    >>> [is_broker_url(u) for u in ("http://h:9092", "kafka://a:1,https://b:2", "AIOKAFKA://h:1")]
    [False, False, True]
    """
    for entry in url.replace(";", ",").split(",") if url else ():
        scheme, sep, rest = entry.strip().rpartition("://")
        if sep and scheme.lower() not in BROKER_SCHEMES:
            return False
        host, sep, port = rest.rstrip("/").rpartition(":")
        if not (sep and port.isdigit() and 0 < int(port) < 65536):
            return False
        if not (host and is_host(host)):
            return False
    return True


def is_host(host: str) -> bool:
    """A host name or address another worker can put in a URL (http://<host>:<port>/...): empty (the
    setting's default), letters, digits, - . _, or an IPv6 address in brackets. A URL there made every
    read forwarded to this worker a 503, for good, with no word at its start.

    >>> [is_host(h) for h in ("", "w1", "w1.svc.cluster.local", "10.0.0.7", "[::1]")]
    [True, True, True, True, True]
    >>> [is_host(h) for h in ("http://w1:6066", "w1:6066", "w 1", "w1/", "[::1")]
    [False, False, False, False, False]
    """
    return (not host or len(host) > 2 and host[0] == "[" and host[-1] == "]"
            or all(c.isalnum() or c in "-._" for c in host))


HOST = {"valid": is_host, "form": "a host name or address, no scheme or port (the port is RECSTREAM_WEB_PORT)"}


def is_file_or_empty(path: str) -> bool:
    """A TLS file setting: unset, or a file there is (ssl's own error named neither it nor its variable)."""
    return not path or os.path.isfile(path)


TLS_FILE = {"valid": is_file_or_empty, "form": "empty or an existing file"}  # the TLS file settings' rule
# RECSTREAM_DATA_DIR: a file there stopped the worker with "File exists: <path>"
DIRECTORY = {"valid": lambda path: not os.path.exists(path) or os.path.isdir(path),
             "form": "a directory, or a path where one can be made (not a file)"}


# The app id and the topic prefix name topics (`<prefix><app id>-recommendations-changelog`, 26 characters
# added), so they take Kafka's characters only and, together, at most 200 of its 249 a name may have: a
# space or a slash made the worker create topics no one can name, 300 characters topics Kafka refuses.
KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]*")
MAX_NAMES_CHARS = 200
NAME_CHARS = "the characters a Kafka topic name takes: letters, digits, . _ -"


def check_together(s) -> None:
    """The checks that span fields or name Kafka objects, on a Settings (ConfigError naming the variable)."""
    if not (s.app_id and KAFKA_NAME.fullmatch(s.app_id)):
        raise ConfigError(f"{PREFIX}APP_ID must be 1 to {MAX_NAMES_CHARS} of {NAME_CHARS}; got {s.app_id!r}")
    if not KAFKA_NAME.fullmatch(s.topic_prefix):
        raise ConfigError(f"{PREFIX}TOPIC_PREFIX must be empty or {NAME_CHARS}; got {s.topic_prefix!r}")
    if len(s.topic_prefix) + len(s.app_id) > MAX_NAMES_CHARS:
        raise ConfigError(f"{PREFIX}TOPIC_PREFIX and {PREFIX}APP_ID must be at most {MAX_NAMES_CHARS} characters "
                          f"together (Kafka's topic names end at 249), got {len(s.topic_prefix) + len(s.app_id)}")
    if s.kafka_security_protocol.startswith("SASL") and not s.kafka_sasl_username:
        raise ConfigError("RECSTREAM_KAFKA_SASL_USERNAME is required with a SASL security protocol")
    if s.api_token != s.api_token.strip():  # a secrets file's newline: every request was a 401, no word at start
        raise ConfigError(f"{PREFIX}API_TOKEN must be the token alone, without the blanks or newline around it")
    if s.write_keys and not write_key_set(s.write_keys):  # "," let the collector take any key
        raise ConfigError(f"{PREFIX}WRITE_KEYS must be keys separated by commas, not only commas and blanks")
    tls_context(s)  # a TLS file that holds no certificate or key: said at start, naming its variable
    if not any(s.weights.values()):  # accepted, then no event counted toward affinity or trending: no list moved
        raise ConfigError(f"{PREFIX}WEIGHTS must be above 0 for one kind at least (with all 0 no event counts)")


def write_key_set(spec: str) -> frozenset[str]:
    """RECSTREAM_WRITE_KEYS as the collector takes them (empty: any key).

    >>> sorted(write_key_set(" k1, ,k2 ")), write_key_set(",")
    (['k1', 'k2'], frozenset())
    """
    return frozenset(k.strip() for k in spec.split(",") if k.strip())


def bootstrap_servers(url: str) -> str:
    """A broker URL as aiokafka takes it: host:port entries, comma-separated, no schemes.

    >>> bootstrap_servers("kafka://h1:9092/,kafka://h2:9093"), bootstrap_servers("h1:9092;h2:9092")
    ('h1:9092,h2:9093', 'h1:9092,h2:9092')
    """
    return ",".join(e.strip().split("://", 1)[-1].rstrip("/") for e in url.replace(";", ",").split(",") if e.strip())


def accepts(rule: Mapping, value) -> bool:
    return ((not isinstance(value, float) or math.isfinite(value))
            and ("valid" not in rule or rule["valid"](value))
            and ("choices" not in rule or value in rule["choices"])
            and ("min" not in rule or value >= rule["min"])
            and ("above" not in rule or value > rule["above"])
            and ("max" not in rule or value <= rule["max"]))


def convert(f: Field, raw: str):
    try:
        if f.type == "int":
            return int(raw)
        if f.type == "float":
            return float(raw)
        if f.type == "bool":
            lowered = raw.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes", "on")
        if f.type.startswith("Mapping"):
            return MappingProxyType(parse_weights(raw))
        return raw
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(f"{var_name(f)}={raw!r} is not a valid {f.type}; it must be {form_of(f)}") from None


def described(settings_fields) -> list[tuple[str, str, str]]:
    """(env var, default, help) per field; a number's or flag's accepted form is added to its help
    (text settings state theirs)."""
    out = []
    for f in settings_fields:
        default = f.default_factory() if f.default is MISSING else f.default
        if isinstance(default, Mapping):
            default = ",".join(f"{k}={v:g}" for k, v in default.items())
        elif isinstance(default, bool):  # as the variable takes it (True was printed)
            default = "true" if default else "false"
        typed = f.type != "str" and "form" not in f.metadata
        out.append((var_name(f), str(default), f.metadata["help"] + (f" ({form_of(f)})" if typed else "")))
    return out


def tls_context(settings):
    """The TLS context for SSL and SASL_SSL (None otherwise)."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    import ssl

    try:  # ssl's own error named neither the file nor its variable ("no certificate or crl found")
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    except ssl.SSLError as exc:
        raise ConfigError(f"{PREFIX}KAFKA_SSL_CAFILE must be a PEM file of CA certificates; "
                          f"{settings.kafka_ssl_cafile!r}: {exc.reason or exc}") from None
    if settings.kafka_ssl_certfile:
        try:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile or None)
        except ssl.SSLError as exc:
            raise ConfigError(f"{PREFIX}KAFKA_SSL_CERTFILE and {PREFIX}KAFKA_SSL_KEYFILE must be a PEM certificate "
                              f"and its key; {settings.kafka_ssl_certfile!r}: {exc.reason or exc}") from None
    return context
