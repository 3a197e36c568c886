"""Crash points for tests: `RECSTREAM_FAILPOINT=<name>` ends the worker process at once, as a kill -9
would (no stop, no flush, no commit), the first time it passes `failpoint("<name>")`. It lets a test put
a crash exactly where a kill -9 at a random moment only sometimes lands (a chaos run: 2 of 3). Unset,
as everywhere but those tests, a failpoint is one comparison.

Points: `parked_batch_stored`: a batch that parked a message on the pending topic has written its
RocksDB stores and sent nothing else yet (agents/ingest.py). `unreplayable_batch_stored`: a batch with
no input behind it (a list refresh, agents/refresh.py) has written its RocksDB stores and sent nothing yet.
`bulk_restore_copied`: the bulk restore wrote its first run of changelog records into a store
(streams/worker/restore.py).
"""

from __future__ import annotations

import os

ARMED = os.environ.get("RECSTREAM_FAILPOINT", "")
EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL


def failpoint(name: str) -> None:
    if ARMED == name:
        os._exit(EXIT_CODE)
