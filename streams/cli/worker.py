"""`recstream worker` and faust's other commands: the one place that wires a worker. It sets
the process's memory behaviour, installs the faust/aiokafka patches, registers the agents and
the web views (importing their modules), and hands over to faust's CLI. Nothing else imports
`agents`; importing a module does no I/O, installs no patch and changes no other module: it
only declares its part of the app (tables, topics, agents, views), as faust's decorators do."""

from __future__ import annotations

from pathlib import Path


def run() -> None:
    import mode.loop

    from streams.kafka.memory import fix_mmap_threshold, limit_malloc_arenas
    from streams.worker.app import app, settings
    from streams.worker.patches import install_all

    limit_malloc_arenas(settings.malloc_arenas)  # before faust and RocksDB start their threads
    fix_mmap_threshold(settings.malloc_mmap_threshold_kb)
    import agents  # noqa: F401  (the agents)
    import streams.worker.collector_web  # noqa: F401  (the Segment-compatible collector)
    import streams.worker.web  # noqa: F401  (the HTTP API)

    streams.worker.web.install()
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    install_all(settings)
    mode.loop.use(settings.event_loop)  # the policy faust's worker creates its loop from
    app.main()
