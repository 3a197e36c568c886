"""Thin faust agents: decode -> call the pure core (streams.*) -> write tables / send."""

from agents import catalog, images, ingest, memory, refresh, users  # noqa: F401
