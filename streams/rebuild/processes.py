"""Where a rebuild shard runs: in this process (LocalShard), or in a process of its own that serves
the same calls over a pipe (ShardProcess)."""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import os
import signal
import time
import traceback
from multiprocessing.reduction import ForkingPickler
from types import MappingProxyType

from streams.core.ingest import ParserConfig
from streams.core.pipeline import PipelineConfig
from streams.core.settings import Settings
from streams.kafka.broker import _die_with_parent
from streams.kafka.memory import growing_heap
from streams.rebuild.shard import Shard


class _Handle:
    """What the parent holds of a shard: `call(step, *args)`, each step's wall time, and
    `counter.value` (records read so far)."""

    def __init__(self, index: int, counter):
        self.index, self.counter = index, counter
        self.seconds: dict[str, float] = {}  # step -> wall time

    async def call(self, step: str, *args):
        started = time.monotonic()
        result = await self._run(step, args)
        self.seconds[step] = time.monotonic() - started
        return result

    async def _run(self, step: str, args: tuple):
        raise NotImplementedError


class LocalShard(_Handle):
    """A shard in this process (a one-shard rebuild)."""

    def __init__(self, shard: Shard):
        super().__init__(shard.index, shard.counter)
        self.shard = shard

    async def _run(self, step: str, args: tuple):
        result = getattr(self.shard, step)(*args)
        return await result if inspect.isawaitable(result) else result

    def kill(self) -> None:
        pass

    def close(self) -> None:
        pass


class ShardProcess(_Handle):
    """A shard in a child process (spawned: no inherited locks, threads or event loop). Steps
    go over a pipe; an exception in the child comes back with its traceback."""

    def __init__(self, ctx, index: int, count: int, settings: Settings, model_cfg: PipelineConfig,
                 parser: ParserConfig, spill_dir: str):
        super().__init__(index, ctx.Value("q", 0, lock=False))
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, name=f"recstream-rebuild-{index}", daemon=True,
                                args=(child, index, count, settings, model_cfg, parser, spill_dir, self.counter))
        # Ctrl-C reaches a terminal's whole foreground process group: the child starts with it ignored (kept
        # through exec, and Python leaves an ignored SIGINT be), the parent stops its shards
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.proc.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        child.close()

    async def _run(self, step: str, args: tuple):
        try:
            self.conn.send((step, args))
        except OSError:  # the pipe is broken: the child is gone
            raise self._died() from None
        status, value = await asyncio.get_running_loop().run_in_executor(None, self._receive)
        if status == "error":
            raise ShardFailed(f"rebuild shard {self.index} failed in {step}:\n{value}")
        return value

    def _receive(self):
        while not self.conn.poll(1.0):
            if not self.proc.is_alive():
                raise self._died()
        try:
            return self.conn.recv()
        except (EOFError, OSError):  # closed, or reset (the child died with our message unread)
            raise self._died() from None

    def _died(self) -> ShardFailed:
        self.proc.join(1)
        return ShardFailed(f"rebuild shard {self.index} died (exit code {self.proc.exitcode})")

    def kill(self) -> None:
        """Stop the child at once (the rebuild was interrupted or failed: its step's work is moot)."""
        self.proc.kill()
        self.proc.join(5)

    def close(self) -> None:
        try:
            self.conn.send(("stop", ()))
        except OSError:
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


def _mappingproxy(items: dict) -> MappingProxyType:
    return MappingProxyType(items)


class ShardFailed(RuntimeError):
    """A rebuild shard's step raised or its process died."""


def _serve(conn, index, count, settings, model_cfg, parser, spill_dir, counter) -> None:
    """A child shard's loop: one step per message until "stop". The child dies with the parent (a parent killed -9
    left its shards running until they wrote to the broken pipe, each with a traceback)."""
    _die_with_parent()
    if os.getppid() != multiprocessing.parent_process().pid:  # the parent died before that took effect
        return
    shard = Shard(index, count, settings, settings.aiokafka_kwargs(), model_cfg, parser, spill_dir, counter)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with growing_heap():
        while True:
            try:
                step, args = conn.recv()
            except EOFError:
                return  # the parent went away
            if step == "stop":
                return
            try:
                result = getattr(shard, step)(*args)
                if inspect.isawaitable(result):
                    result = loop.run_until_complete(result)
            except BaseException:  # noqa: BLE001 (reported to the parent, which raises it)
                _answer(conn, ("error", traceback.format_exc()))
                return
            if not _answer(conn, ("ok", result)):
                return


def _answer(conn, message) -> bool:
    """Send `message` to the parent; False (and no traceback) when the parent is gone."""
    try:
        conn.send(message)
        return True
    except OSError:
        return False


# the settings' and the model's weights are read-only mappings, which pickle cannot send as they are
ForkingPickler.register(MappingProxyType, lambda m: (_mappingproxy, (dict(m),)))
