"""Thin faust agents: decode -> call the pure core (streams.*) -> write tables / send."""

from agents import catalog, ingest, users  # noqa: F401
