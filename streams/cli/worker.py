"""`recstream worker` and faust's other commands: the one place that wires a worker. It sets
the process's memory behaviour, installs the faust/aiokafka patches, registers the agents and
the web views (importing their modules), and hands over to faust's CLI. Nothing else imports
`agents`; importing a module does no I/O, installs no patch and changes no other module: it
only declares its part of the app (tables, topics, agents, views), as faust's decorators do."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

from streams.core.topology import CATALOG_TOPICS

# faust stops an agent whose source topic and table changelog differ in partitions
# (PartitionsMismatch): these agents write tables, so their topics must have RECSTREAM_PARTITIONS
# the topics' creation and count, bounded: a broker that accepts connections and never answers
# held the worker for good; 24 CreateTopics one at a time take seconds on a real cluster
TOPICS_WAIT_S = 60.0


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
    install_all(settings)
    if sys.argv[1:2] == ["worker"] and not {"-h", "--help"} & set(sys.argv[2:]):  # not for help nor faust's others
        from streams.cli.common import bootstrap_of, warn_unknown_variables

        warn_unknown_variables()
        if not settings.direct_ingest:  # an outside check: 4 of 14 runs with kill -9s lost events, up to 291
            print("recstream: warning: RECSTREAM_DIRECT_INGEST=false: faust's consumer can drop re-fetched records "
                  "after a restart or rebalance, and a kill -9 then loses events for good (docs/traps.md)",
                  file=sys.stderr)
        bootstrap = bootstrap_of(settings, "recstream worker")  # unset, faust would try 127.0.0.1:9092 in silence
        if "--without-web" not in sys.argv:
            check_web_address(*web_address(sys.argv[2:], settings.web_host, settings.web_port))
        check_open_files(settings.partitions)
        lock_state(Path(settings.data_dir), settings.kafka_app_id)  # before its state is read or removed
        prepare_topics(settings, bootstrap)
        check_local_state(app, settings, bootstrap)
        sys.argv[1:] = with_log_level(sys.argv[1:], settings.log_level)
    mode.loop.use(settings.event_loop)  # the policy faust's worker creates its loop from
    app.main()


def with_log_level(args: list[str], level: str) -> list[str]:
    """A worker's arguments with `-l level` (RECSTREAM_LOG_LEVEL) unless they name one: faust's own default,
    warn, was used, and the setting changed nothing (an outside check).

    >>> with_log_level(["worker"], "debug"), with_log_level(["worker", "--loglevel=info", "-p", "6067"], "debug")
    (['worker', '-l', 'debug'], ['worker', '--loglevel=info', '-p', '6067'])
    """
    named = any(a.startswith(("-l", "--loglevel")) for a in args[1:])
    return args if named else [args[0], "-l", level, *args[1:]]


class StartFailed(SystemExit):
    """A worker that cannot start: one line on stderr naming the problem, exit status 2 (no
    traceback), as every other command says a bad setting or an unreachable broker."""

    def __init__(self, problem: str):
        print(f"recstream worker: {problem}", file=sys.stderr)
        super().__init__(2)


FILES_PER_PARTITION = 80  # a RocksDB store per table partition (~9 tables, ~8 files each): ~70 seen


def check_open_files(partitions: int, limits=None) -> int:
    """Raise the soft limit of open files to the hard one, and refuse to start (one line) when it still
    cannot hold a worker owning every partition: under the common 1,024, 24 partitions started, then
    crashed at "Too many open files" in RocksDB, and again at every restart. Returns the limit.

    >>> check_open_files(4, limits=(1024, 4096))
    4096
    >>> check_open_files(24, limits=(1024, 1024))
    Traceback (most recent call last):
    ...
    streams.cli.worker.StartFailed: 2
    """
    import resource

    soft, hard = limits or resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and limits is None:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            hard = soft
    limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    needed = 256 + partitions * FILES_PER_PARTITION
    if limit < needed:
        raise StartFailed(f"{partitions} partitions need about {needed:,} open files and this process may open "
                          f"{limit:,} (ulimit -n): raise the limit or lower RECSTREAM_PARTITIONS")
    return limit


def web_address(argv: list[str], host: str, port: int) -> tuple[str, int]:
    """The HTTP address faust binds: RECSTREAM_WEB_HOST / RECSTREAM_WEB_PORT unless faust's options
    say otherwise (`-p 6091` was served while the check probed 6066: a newcomer's check).

    >>> web_address(["-l", "info", "-p", "6091"], "127.0.0.1", 6066)
    ('127.0.0.1', 6091)
    >>> web_address(["--web-port=7000", "-b", "0.0.0.0"], "127.0.0.1", 6066)
    ('0.0.0.0', 7000)
    """
    found: dict[str, str | int] = {"host": host, "port": port}
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        what = {"-p": "port", "--web-port": "port", "-b": "host", "--web-bind": "host"}.get(name)
        if what:
            found[what] = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
    port_given = str(found["port"])
    return str(found["host"]), int(port_given) if port_given.isdigit() else port  # faust refuses a bad one itself


def check_web_address(host: str, port: int) -> None:
    """Bind the HTTP address once before faust starts: a port in use or a host this machine does
    not have stopped faust's web server with a traceback (exit 1), after the broker work."""
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[:1]:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server binds
                probe.bind(address)
    except OSError as exc:
        raise StartFailed(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc} "
                          "(RECSTREAM_WEB_HOST / RECSTREAM_WEB_PORT)") from None


def start_client(settings, bootstrap: str) -> dict:
    """The worker's start-up Kafka clients' settings: a request unanswered for 15 s (aiokafka's
    default: 40) means a broker that is not serving."""
    return {**settings.aiokafka_kwargs(), "bootstrap_servers": bootstrap, "request_timeout_ms": 15000}


def check_local_state(app, settings, bootstrap: str) -> None:
    """The data dir made, an older layout's state pointed out, and the local stores ahead of
    their changelogs removed (streams.worker.local_state: faust would refuse to start)."""
    from streams.worker.local_state import drop_stores_ahead

    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    if (data / "v1").is_dir():  # before 2026-12-05 every app id's tables shared <data dir>/v1
        print(f"recstream worker: {data / 'v1'} holds local state of an earlier recstream, not used: each app id's "
              f"state is now kept in {data}/<app id> (this one recovers it from the changelogs); delete "
              f"{data / 'v1'} to free the space", file=sys.stderr)
    try:
        drop_stores_ahead(app, start_client(settings, bootstrap),
                          lambda line: print(f"recstream worker: {line}", file=sys.stderr), TOPICS_WAIT_S)
    except Exception as exc:  # noqa: BLE001 - a broker that stopped answering since the topics were made
        raise StartFailed(f"cannot read its changelogs' ends from {settings.broker_url} "
                          f"({str(exc) or type(exc).__name__})") from None


_LOCKS: list[int] = []  # held while the process lives; the kernel lets go when it ends (kill -9 included)


def lock_state(data: Path, app_id: str) -> None:
    """Refuse (one line) a second worker of one app id on one data dir: it waited 40 s on the RocksDB locks
    while its group rebalanced (the live worker answered 503 to every user), then crashed with a traceback
    (an outside check; the default data dir, `data`, is relative)."""
    import fcntl

    data.mkdir(parents=True, exist_ok=True)
    fd = os.open(data / f".{app_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StartFailed(f"another worker (pid {holder}) uses {data} for app id {app_id!r}: give each worker on "
                          "this machine its own RECSTREAM_DATA_DIR") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _LOCKS.append(fd)


def prepare_topics(settings, bootstrap: str) -> None:
    """Create every topic the worker uses before faust starts (inputs, internal, outputs; the
    catalog ones compacted), each with its declared partitions:
    - faust's subscription had the broker auto-create the catalog topics with its own default
      partition count (the embedded broker: 4), so with any other RECSTREAM_PARTITIONS the catalog
      agents stopped (PartitionsMismatch) and the catalog never loaded while /health said ok;
    - an output topic declared at its first send raced a client's metadata request for it (a test
      reading the recommendations): the embedded broker never answered the CreateTopics, and the
      batch waiting on it held direct ingest for good (once on CI).
    A catalog topic or a table changelog that exists with another count stops the worker with the reason (a
    changelog another client had the broker create, with its default count, crashed the worker at its first
    write to a partition it lacked, at every start)."""
    from streams.worker.app import app
    from streams.worker.commit import mark_declared
    from streams.worker.topics import declared

    topics = declared()
    wanted = {name: (t.partitions or settings.partitions, dict(t.config or {})) for name, t in topics.items()}
    catalog = {settings.topic(name) for name in CATALOG_TOPICS}
    changelogs = {table.changelog_topic.get_topic_name() for table in app.tables.values()}
    url = settings.broker_url
    client = start_client(settings, bootstrap)
    check = _check_then_create(client, catalog | changelogs, wanted, settings.partitions)
    try:  # bounded: faust itself crashed (refused) or hung for good (a broker that never answers)
        found, counts = asyncio.run(asyncio.wait_for(check, TOPICS_WAIT_S))
    except Exception as exc:  # noqa: BLE001 - whatever it was, the worker cannot start without them
        why = str(exc) or type(exc).__name__
        why = f"no answer in {TOPICS_WAIT_S:.0f} s" if isinstance(exc, TimeoutError) else why
        raise StartFailed(f"cannot create its topics on the broker at {url} ({why}); check RECSTREAM_BROKER_URL "
                          "and the RECSTREAM_KAFKA_* settings") from None
    if found is not None:
        _refuse_partitions(settings, {n: c for n, c in found.items() if n in catalog},
                           {n: c for n, c in found.items() if n in changelogs})
    mark_declared(name for name, count in counts.items() if count)


def _refuse_partitions(settings, catalog: dict[str, int], changelogs: dict[str, int]) -> None:
    if catalog:
        raise StartFailed(f"RECSTREAM_PARTITIONS is {settings.partitions}, but "
                          + ", ".join(f"{name} has {count}" for name, count in sorted(catalog.items()))
                          + ": the catalog agents write tables of RECSTREAM_PARTITIONS partitions and faust refuses "
                          "other counts. Recreate the topic with that many partitions, or set RECSTREAM_PARTITIONS.")
    raise StartFailed(f"RECSTREAM_PARTITIONS is {settings.partitions}, but the changelog "
                      + ", ".join(f"{name} has {count}" for name, count in sorted(changelogs.items()))
                      + " partitions: the tables keep RECSTREAM_PARTITIONS. A changelog no worker wrote was "
                      "created by the broker for another client (its default count): delete it; otherwise set "
                      "RECSTREAM_PARTITIONS to what the app id's workers ran with.")


async def _check_then_create(client_kwargs: dict, checked: set[str], wanted: dict[str, tuple[int, dict]],
                             partitions: int):
    """(the existing `checked` topics whose partition count is not RECSTREAM_PARTITIONS, or None when none is;
    the partition counts of `wanted`, created when missing). With a wrong count nothing is created: a worker
    that refused made the topics it lacked with its own count, which a rebuild under the right one then refused."""
    from streams.kafka.admin import ensure_topics, topic_partitions, wrong_partition_counts

    wrong = await wrong_partition_counts(client_kwargs, checked, partitions)
    if wrong:
        return wrong, {}
    await ensure_topics(client_kwargs, wanted)
    return None, await topic_partitions(client_kwargs, wanted)
