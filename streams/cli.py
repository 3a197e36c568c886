"""``recstream``: faust's CLI (worker, tables, ...) plus our own commands.

    recstream worker -l info        a worker (faust)
    recstream dev [--duration S]    embedded broker + worker + demo events + live affinity
    recstream demo-events ...       seeded demo catalog/events as JSONL on stdout
    recstream broker                run the embedded broker in the foreground
    recstream config                every RECSTREAM_* setting with its current value
    recstream simulate-multiplier   image-change probability per exploration multiplier (+ PNG)
    recstream replay FILE...        archived events (JSONL, .gz) -> input topics, with progress
    recstream rebuild --app-id ID   rebuild all state from the input topics, then run live
    recstream emit-all              re-publish every user's current recommendations
"""

from __future__ import annotations

import sys

OWN_COMMANDS = ("dev", "demo-events", "broker", "config", "simulate-multiplier")
OPS_COMMANDS = ("replay", "emit-all", "rebuild")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    _check_settings()
    if argv and argv[0] == "simulate-multiplier":
        from streams import simulate

        sys.exit(simulate.main(argv[1:]))
    if argv and argv[0] in OPS_COMMANDS:
        from streams import ops

        sys.exit({"replay": ops.cmd_replay, "emit-all": ops.cmd_emit_all, "rebuild": ops.cmd_rebuild}[argv[0]](argv[1:]))
    if argv and argv[0] in OWN_COMMANDS:
        from streams import devtools

        sys.exit(devtools.run(argv[0], argv[1:]))
    if argv and argv[0] == "worker":
        _reexec_with_allocator(argv)
    from streams.app import main as faust_main

    faust_main()


def _check_settings() -> None:
    """Every command starts from a valid configuration: a bad RECSTREAM_* value stops it here
    with one line naming the variable and what it accepts, exit status 2, no traceback."""
    from streams.config import load_settings
    from streams.settings import ConfigError

    try:
        load_settings()
    except ConfigError as exc:
        print(f"recstream: {exc}", file=sys.stderr)
        sys.exit(2)


def _reexec_with_allocator(argv: list[str]) -> None:
    """PYTHONMALLOC is read only at interpreter start: a worker re-executes itself (same pid, so
    supervisors and PR_SET_PDEATHSIG are unaffected) when the configured allocator is not the one
    it runs with (RECSTREAM_PYTHON_MALLOC)."""
    import os

    from streams.settings import Settings

    wanted = Settings.from_env().python_malloc
    if os.environ.get("PYTHONMALLOC") != wanted:
        os.execve(sys.executable, [sys.executable, "-m", "streams.cli", *argv], {**os.environ, "PYTHONMALLOC": wanted})


if __name__ == "__main__":
    main()
