"""What the commands share: the bootstrap address (or a one-line error), the line for a broker that did not answer,
a progress line on stderr, where a plot goes (--out, checked before any work), the warning for a RECSTREAM_* typo, and a
worker's JSON read over HTTP (its token sent, a failure in one line)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request

from streams.core.setting_rules import bootstrap_servers
from streams.core.settings import Settings


def said(exc: BaseException) -> str:
    """An exception in a few words: its type, then its message when it has one."""
    text, name = str(exc), type(exc).__name__
    return text if name in text else f"{name}: {text}" if text else name


def unanswered(exc: BaseException, url: str = "") -> str:
    """A broker that did not answer (a KafkaError), in the one line every command prints for it."""
    at = f" at {url}" if url else ""
    return f"the broker{at} did not answer ({said(exc)}); check RECSTREAM_BROKER_URL and the RECSTREAM_KAFKA_* settings"


class Progress:
    """One status line on stderr: count, rate, percent and ETA (by bytes read, when known)."""

    def __init__(self, label: str, total_bytes: int | None = None, every: float = 0.5):
        self.label, self.total, self.every = label, total_bytes, every
        self.started = self._last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(self, count: int, done_bytes: int | None = None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (self.every if self.tty else 5.0):
            return
        self._last = now
        elapsed = max(now - self.started, 1e-9)
        line = f"{self.label}: {count:,} ({count / elapsed:,.0f}/s)"
        if self.total and done_bytes is not None and done_bytes > 0:
            frac = min(done_bytes / self.total, 1.0)
            eta = elapsed * (1 - frac) / frac if frac > 0 else 0
            line += f" {frac:6.1%} ETA {eta:,.0f}s"
        sys.stderr.write(("\r" + line + "   ") if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self, count: int) -> None:
        self.update(count, self.total, force=True)
        if self.tty:
            sys.stderr.write("\n")


def bootstrap_of(settings: Settings, command: str = "recstream") -> str:
    """The cluster's bootstrap servers, or one line naming `command` and exit status 2 when
    RECSTREAM_BROKER_URL is not set (every command that talks to a cluster, the worker too)."""
    if not settings.broker_url:
        print(f"{command}: RECSTREAM_BROKER_URL is not set: point it at the cluster "
              "(e.g. kafka://127.0.0.1:9092)", file=sys.stderr)
        sys.exit(2)
    return bootstrap_servers(settings.broker_url)


def plot_path(out: str) -> str:
    """The file a plot named `out` is written to, as matplotlib names it (no suffix: .png added), or
    ValueError saying why it cannot be: checked up front, since a bad suffix used to end the command
    in matplotlib's traceback after its work, and a directory (/tmp) was written as /tmp.png."""
    from matplotlib.backend_bases import FigureCanvasBase

    if os.path.isdir(out):
        raise ValueError(f"--out {out} is a directory: name a file, e.g. {os.path.join(out, 'plot.png')}")
    fmt = os.path.splitext(out)[1][1:].lower()
    path = out if fmt else out.rstrip(".") + ".png"
    supported = sorted(FigureCanvasBase.get_supported_filetypes())
    if fmt and fmt not in supported:
        raise ValueError(f"--out {out}: a plot is written as one of {', '.join(supported)} (by its suffix), "
                         f"not {fmt!r}")
    if not os.path.isdir(os.path.dirname(path) or "."):
        raise ValueError(f"No such file or directory: {os.path.dirname(path)} (--out {out})")
    return path


def warn_unknown_variables() -> None:
    """One stderr line per RECSTREAM_* variable that is no setting (a typo would silently mean the default)."""
    from streams.core.config import unknown_variables

    for problem in unknown_variables(os.environ):
        print(f"recstream: warning: {problem}; ignored", file=sys.stderr)


def quiet_client_retries() -> None:
    """A command's Kafka clients' log lines (Python's last-resort handler prints them to stderr, the message
    alone, WARNING and up), each aiokafka message at most once per 10 s: `replay` with its broker gone printed
    ~3,000 lines of the same three retry errors before its own one-line error (an outside check)."""
    import logging

    from streams.worker.logs import install_repeated_lines

    handlers = logging.getLogger().handlers or [logging.lastResort]  # the root's own, when something set some
    install_repeated_lines([h for h in handlers if h is not None])


class WorkerError(Exception):
    """A worker's HTTP API could not answer (one line: the URL and why)."""


def worker_json(base: str, path: str, token: str = "", timeout: float = 30.0):
    """`GET base + path` as JSON. `base` may leave out http:// (host:port); the bearer token goes
    with it when set (a worker with RECSTREAM_API_TOKEN answered 401 to `experiments report`)."""
    url = (base if "://" in base else "http://" + base).rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        raise WorkerError(f"{base!r} is not an http:// URL, e.g. http://127.0.0.1:6066")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        hint = " (set RECSTREAM_API_TOKEN to the workers' token)" if exc.code == 401 else ""
        raise WorkerError(f"{url} answered HTTP {exc.code} {exc.reason}{hint}") from None
    except urllib.error.URLError as exc:
        raise WorkerError(f"cannot reach {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, a bad URL, a body that is not JSON
        raise WorkerError(f"cannot read {url}: {exc}") from None


async def interruptible(coroutine):
    """`await coroutine`, Ctrl-C cancelling it from the event loop (then KeyboardInterrupt, as asyncio.run gives):
    asyncio.run's own handler cancels it from a signal handler, between any two bytecodes, and once cancelled an
    aiokafka response future between its done() check and its set_result: an InvalidStateError traceback at a bulk
    rebuild's Ctrl-C (a CI run)."""
    import signal

    loop, task, interrupted = asyncio.get_running_loop(), asyncio.current_task(), []

    def on_sigint() -> None:
        interrupted.append(True)
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        return await coroutine
    try:
        return await coroutine
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
