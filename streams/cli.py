"""``recstream``: faust's CLI (worker, tables, ...) plus our own commands.

    recstream worker -l info        a worker (faust)
    recstream dev [--duration S]    embedded broker + worker + demo events + live affinity
    recstream demo-events ...       seeded demo catalog/events as JSONL on stdout
    recstream broker                run the embedded broker in the foreground
    recstream config                every RECSTREAM_* setting with its current value
    recstream simulate-multiplier   image-change probability per exploration multiplier (+ PNG)
"""

from __future__ import annotations

import sys

OWN_COMMANDS = ("dev", "demo-events", "broker", "config", "simulate-multiplier")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "simulate-multiplier":
        from streams import simulate

        sys.exit(simulate.main(argv[1:]))
    if argv and argv[0] in OWN_COMMANDS:
        from streams import devtools

        sys.exit(devtools.run(argv[0], argv[1:]))
    from streams.app import main as faust_main

    faust_main()


if __name__ == "__main__":
    main()
