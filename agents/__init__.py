"""Thin faust agents: decode -> call the pure core (streams.*) -> write tables / send."""

from agents import affinity, catalog, ingest  # noqa: F401
