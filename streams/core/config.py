"""Start-up check of the whole configuration: the settings, and the JSON-valued ones parsed the
way the worker will parse them, so that a bad value stops any command before it starts, with one
line that names the variable (`recstream` prints it and exits 2). Pure: no faust.

>>> load_settings({"RECSTREAM_VARIANTS": "{oops"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streams.core.setting_rules.ConfigError: RECSTREAM_VARIANTS: not valid JSON (Expecting property name enclosed in ...
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime, timezone

from streams.core.affinity import AffinityModel
from streams.core.attribution import Rules
from streams.core.events import load_event_map
from streams.core.experiments import load_variants
from streams.core.ingest import ParserConfig
from streams.core.pipeline import PipelineConfig
from streams.core.setting_rules import form_of, var_name
from streams.core.settings import PREFIX, ConfigError, Settings


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """`Settings.from_env`, then each JSON-valued setting through its own loader (a ConfigError
    naming the variable for bad JSON, an unreadable @file, or content the loader rejects)."""
    from streams.core.events import load_event_map
    from streams.core.experiments import load_variants
    from streams.core.image_pipeline import load_image_variants

    settings = Settings.from_env(env)
    for name, load in (("event_map", load_event_map), ("variants", load_variants),
                       ("image_variants", load_image_variants)):
        try:
            load(getattr(settings, name))
        except (ValueError, TypeError, AttributeError, OSError, RecursionError) as exc:
            why = _reason(exc, getattr(settings, name))
            raise ConfigError(f"{PREFIX}{name.upper()}: {why}; it must be {accepted_form(name)}") from None
    return settings


def accepted_form(name: str) -> str:
    """What setting `name` accepts, from its rule.

    >>> accepted_form("web_port"), accepted_form("half_life_days"), accepted_form("log_level")
    ('an integer from 1 to 65535', 'a finite number > 0', 'one of crit, error, warn, info or debug')
    """
    return form_of(next(f for f in fields(Settings) if f.name == name))


def _reason(exc: Exception, value: str) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if isinstance(exc, OSError):  # a failed read (not open) names no file: the @file of the value then
        return f"cannot read {exc.filename or value.removeprefix('@')!r} ({exc.strerror or exc})"
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return str(exc) or type(exc).__name__


def core_objects(s: Settings) -> tuple[AffinityModel, ParserConfig, PipelineConfig]:
    """The pure core's configuration from settings (the worker's and the bulk rebuild's)."""
    model = AffinityModel(weights=s.weights, half_life_s=s.half_life_seconds, top_k=s.top_k_artists,
                          dedup_window=s.dedup_window, dedup_horizon_s=s.dedup_horizon_s)
    floor = datetime(s.min_event_year, 1, 1, tzinfo=timezone.utc).timestamp()
    parser = ParserConfig(load_event_map(s.event_map), s.max_event_bytes, s.unmapped_events, s.max_future_skew_s, floor)
    pipeline = PipelineConfig(model=model, variants=load_variants(s.variants), experiment=s.experiment,
                              model_version=s.model_version, affinity_top_n=s.affinity_update_top_n,
                              trending_half_life_s=s.trending_half_life_days * 86400.0,
                              attribution=Rules(attribution_days=s.attribution_days))
    return model, parser, pipeline


# set by `recstream rebuild` for the worker it starts; by tests, a crash point (streams/worker/failpoints.py)
INTERNAL = frozenset({"RECSTREAM_REBUILD", "RECSTREAM_FAILPOINT"})


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """RECSTREAM_* variables that are no setting, each with the nearest setting when one is close: a
    misspelt name was ignored without a word, its default used (a newcomer).

    >>> unknown_variables({"RECSTREAM_PARTITONS": "8", "RECSTREAM_PARTITIONS": "4", "RECSTREAM_ZZZ": "", "HOME": "/"})
    ['RECSTREAM_PARTITONS is not a setting (RECSTREAM_PARTITIONS?)', 'RECSTREAM_ZZZ is not a setting']
    >>> unknown_variables({"RECSTREAM_BROKER": "kafka://k:9092"})  # a setting's name cut short
    ['RECSTREAM_BROKER is not a setting (RECSTREAM_BROKER_URL?)']
    """
    known = {var_name(f) for f in fields(Settings)} | INTERNAL
    unknown = sorted(name for name in env if name.startswith(PREFIX) and name not in known)
    names = sorted(k.removeprefix(PREFIX) for k in known - INTERNAL)  # compared without the prefix every name shares
    return [name + " is not a setting" + "".join(f" ({PREFIX}{close}?)"
                                                  for close in _nearest(name.removeprefix(PREFIX), names))
            for name in unknown]


def _nearest(name: str, names: list[str]) -> list[str]:
    """The setting `name` most likely meant: a close spelling, else the one setting it begins."""
    close = difflib.get_close_matches(name, names, 1, 0.8)
    longer = [n for n in names if n.startswith(name + "_")]
    return close or (longer if len(longer) == 1 else [])
