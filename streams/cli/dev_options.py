"""`recstream dev`'s options, checked before anything starts: a value the demo cannot use used to
surface ~10 s in, after the broker and worker had started, as a traceback from random (--users 0
or -5), or was taken as is (--rate -5 printed "at -5/s"; --rate nan, --events -1, --watch -1)."""

from __future__ import annotations

import argparse
import math

from streams.core.demo import MAX_ARTWORKS

MAX_DEV_USERS = MAX_ARTWORKS // 5  # dev's catalog has 5 artworks per user


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="recstream dev",
        description="Embedded broker + a worker + demo events, printing live recommendations. Its "
                    "temporary folder (worker state and log) is removed at the end unless --keep.")
    parser.add_argument("--duration", type=float, default=0,
                        help="seconds to run (0, the default: until Ctrl-C, after the events too)")
    parser.add_argument("--users", type=int, default=200, help=f"demo users (1 to {MAX_DEV_USERS:,}; default 200)")
    parser.add_argument("--events", type=int, default=20000, help="demo events (at least 0; default 20000)")
    parser.add_argument("--rate", type=float, default=400, help="demo events per second (0: no limit; default 400)")
    parser.add_argument("--watch", type=int, default=3,
                        help="users whose recommendations are printed (0 to --users; default 3: u0 to u2)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (worker log, state)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.duration) and args.duration >= 0):
        parser.error(f"--duration must be a finite number >= 0 (0: until Ctrl-C), got {args.duration}")
    if not (math.isfinite(args.rate) and args.rate >= 0):
        parser.error(f"--rate must be a finite number >= 0 (0: no limit), got {args.rate}")
    if args.users < 1 or args.events < 0 or args.watch < 0:
        parser.error("--users must be at least 1, --events and --watch at least 0")
    if args.users > MAX_DEV_USERS or args.watch > args.users:  # both are built up front
        parser.error(f"--users must be at most {MAX_DEV_USERS:,} (5 artworks each: demo-events' bound), "
                     "--watch at most --users")
    return args
