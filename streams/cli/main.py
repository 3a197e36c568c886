"""``recstream``: our own commands (listed by ``recstream --help``) plus faust's CLI (worker,
agents, tables, ...), which handles every other command."""

from __future__ import annotations

import os
import sys

# (command, one line): what `recstream --help` lists first, in this order.
COMMANDS = (
    ("dev", "embedded broker + a worker + demo events, printing live recommendations"),
    ("demo-events", "seeded demo data as JSONL: events, --catalog, --curated, --images, ..."),
    ("broker", "the embedded Kafka-compatible broker in the foreground"),
    ("config", "every RECSTREAM_* setting with its value, in the form the variable accepts"),
    ("simulate-multiplier", "image-change probability per exploration multiplier (+ PNG)"),
    ("replay", "archived events (JSONL, .gz) -> the input topics, with progress and a summary"),
    ("load", "catalog files (JSONL, .gz): load artworks|curated|images FILE..."),
    ("rebuild", "rebuild all state from the input topics under a new app id, then run live"),
    ("emit-all", "publish every user's current recommendations again"),
    ("experiments", "the A/B readout: experiments report [--out readout.png] [--json]"),
    ("worker", "a worker: recstream worker -l info (faust's command)"),
)
FAUST_COMMANDS = "worker, agents, tables, send, reset, clean-versions, livecheck, models"
OWN_COMMANDS = ("dev", "demo-events", "broker")
OPS_COMMANDS = ("replay", "emit-all", "rebuild")


def usage() -> str:
    width = max(len(name) for name, _ in COMMANDS)
    return "\n".join([
        "usage: recstream COMMAND [ARGS]...",
        "",
        "A streaming recommendation engine on faust and Kafka. Commands:",
        *(f"  {name:<{width}}  {line}" for name, line in COMMANDS),
        "",
        "`recstream COMMAND --help` shows a command's options. Settings are RECSTREAM_*",
        "environment variables (`recstream config`).",
        f"faust's commands are available too: {FAUST_COMMANDS}.",
        "`recstream worker --help` shows a worker's options; `recstream --faust-help` faust's.",
    ])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        _main(argv)
    except KeyboardInterrupt:  # Ctrl-C: one line (commands that stream say where they were), 130 as shells give SIGINT
        print(f"recstream {argv[0] if argv else ''}: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `recstream demo-events | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except (OSError, UnicodeError, RecursionError) as exc:
        # a file that is missing, a directory, not UTF-8 or nested past reason, an unreachable broker:
        # one line naming it, as every other bad input to our commands (a bug in them still shows its traceback)
        _fail(argv[0], _problem(exc))
    except Exception as exc:
        from aiokafka.errors import KafkaError

        if not isinstance(exc, KafkaError):
            raise
        from streams.cli.common import unanswered

        _fail(argv[0], unanswered(exc))


def _fail(command: str, problem: str) -> None:
    print(f"recstream {command}: {problem}", file=sys.stderr)
    sys.exit(2)


def _problem(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start}): {exc.reason}"
    if isinstance(exc, RecursionError):
        return "the input nests too deep to read"
    return f"{type(exc).__name__}: {exc}"


def _main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help", "help"):  # no command: the help, as a usage error
        print(usage(), file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    if argv[0] in ("--version", "version"):  # faust's answered "version Faust 0.15.3"
        from importlib.metadata import version

        print(f"recstream {version('recstream')} (faust-streaming {version('faust-streaming')})")
        sys.exit(0)
    _check_settings()
    command, rest = argv[0], argv[1:]
    if command != "worker":  # a worker may re-execute itself (its allocator): it warns once it runs
        from streams.cli.common import quiet_client_retries, warn_unknown_variables

        warn_unknown_variables()
        quiet_client_retries()
    if command == "simulate-multiplier":
        from streams.cli import simulate

        sys.exit(simulate.main(rest))
    if command == "experiments":
        from streams.cli.readout import main as readout_main

        sys.exit(readout_main(rest))
    if command == "load":
        from streams.cli.load import cmd_load

        sys.exit(cmd_load(rest))
    if command in OPS_COMMANDS:
        from streams.cli import emit, ops

        commands = {"replay": ops.cmd_replay, "emit-all": emit.cmd_emit_all,
                    "rebuild": ops.cmd_rebuild}
        sys.exit(commands[command](rest))
    if command == "config":
        sys.exit(cmd_config(rest))
    if command in OWN_COMMANDS:
        from streams.cli import dev, devtools
        from streams.core import demo

        sys.exit({"dev": dev.cmd_dev, "demo-events": demo.main, "broker": devtools.cmd_broker}[command](rest))
    if command == "--faust-help":
        sys.argv = [sys.argv[0], "--help"]
    elif command == "worker":
        _reexec_with_allocator(argv)
    from streams.cli.worker import run as faust_main

    faust_main()


def cmd_config(argv: list[str]) -> int:
    import argparse
    import shlex
    from dataclasses import fields

    from streams.core.settings import Settings

    parser = argparse.ArgumentParser(
        prog="recstream config",
        description="Every RECSTREAM_* setting in effect, one VAR=value line each, in the form the "
                    "variable accepts and shell-quoted (`set -a; . <(recstream config)` restores "
                    "them).")
    parser.add_argument("--markdown", action="store_true", help="the README's configuration table")
    parser.add_argument("--show-secrets", action="store_true",
                        help="print secrets too (hidden by default)")
    args = parser.parse_args(argv)
    if args.markdown:
        print("| variable | default | meaning |\n|---|---|---|")
        for var, default, help_text in Settings.describe():
            print(f"| `{var}` | {f'`{default}`' if default else '(empty)'} | {help_text} |")
        return 0
    current = Settings.from_env()
    secret = {f.name for f in fields(Settings) if f.metadata.get("secret")}
    for var, default, help_text in Settings.describe():
        name = var[len("RECSTREAM_"):].lower()
        value = getattr(current, name)
        if name in secret and value and not args.show_secrets:
            print(f"# {var} is set (hidden; --show-secrets prints it)    # {help_text}")
            continue
        value = shlex.quote(setting_text(value))
        said = "" if "(default: " in help_text else f" (default: {default or 'empty'})"  # the help may say it better
        print(f"{var}={value}    # {help_text}{said}")
    return 0


def setting_text(value) -> str:
    """A setting's value as its RECSTREAM_* variable accepts it (read back to the same value).

    >>> setting_text({"view": 1.0, "save": 2.5}), setting_text(True), setting_text(0.1)
    ('view=1,save=2.5', 'true', '0.1')
    """
    if hasattr(value, "items"):  # weights: kind=number, as in the defaults' view=1,save=3,...
        return ",".join(f"{k}={v:g}" if float(f"{v:g}") == v else f"{k}={v!r}"
                        for k, v in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _check_settings() -> None:
    """Every command starts from a valid configuration: a bad RECSTREAM_* value stops it here
    with one line naming the variable and what it accepts, exit status 2, no traceback."""
    from streams.core.config import load_settings
    from streams.core.settings import ConfigError

    try:
        load_settings()
    except ConfigError as exc:
        print(f"recstream: {exc}", file=sys.stderr)
        sys.exit(2)


def _reexec_with_allocator(argv: list[str]) -> None:
    """PYTHONMALLOC is read only at interpreter start: a worker re-executes itself (same pid, so
    supervisors and PR_SET_PDEATHSIG are unaffected) when the configured allocator is not the one
    it runs with (RECSTREAM_PYTHON_MALLOC)."""
    from streams.core.settings import Settings

    wanted = Settings.from_env().python_malloc
    running = os.environ.get("PYTHONMALLOC") or "pymalloc"  # unset: a release build's own allocator
    if running != wanted:
        os.execve(sys.executable, [sys.executable, "-m", "streams.cli", *argv], {**os.environ, "PYTHONMALLOC": wanted})


if __name__ == "__main__":
    main()
