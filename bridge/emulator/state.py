"""Everything the emulator holds in memory, and the background tasks that keep it moving."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bridge.emulator.config import EmulatorConfig
from bridge.emulator.desk_callbacks import CallbackSender
from bridge.emulator.desk_handover import Handover
from bridge.emulator.desk_state import DeskRegistry
from bridge.emulator.faults import FaultBook
from bridge.emulator.ivh_state import IvhRegistry, Outlet
from bridge.emulator.journal import Journal

logger = logging.getLogger(__name__)


class TaskSet:
    """Named background tasks, all cancelled together at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a tracked task."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("emulator task %s failed", task.get_name(), exc_info=task.exception())

    async def aclose(self) -> None:
        """Cancel every task and wait for them to end."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class EmulatorState:
    """IVH and Desk sessions, open channels, the journal and the armed faults."""

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.wall = wall
        self.tasks = TaskSet()
        self.journal = Journal(max_entries=config.journal_size)
        self.faults = FaultBook()
        self.ivh = IvhRegistry(config, self.tasks.spawn, clock)
        self.desk = DeskRegistry(config, wall)
        self.handover = Handover()
        self.callbacks = CallbackSender(
            url=config.desk_callback, sdkappid=config.sdkappid, spawn=self.tasks.spawn, wall=wall
        )
        self.desk.observers.append(self.callbacks.observe)
        self.channels: dict[str, Outlet] = {}

    def start(self) -> None:
        """Start the idle sweeper (needs a running event loop)."""
        self.tasks.spawn(self._sweep_forever(), "emulator-sweeper")

    async def _sweep_forever(self) -> None:
        shortest = min(self.config.session_idle_timeout, self.config.closed_retention)
        interval = min(max(shortest / 10, 0.02), 5.0)
        while True:
            await asyncio.sleep(interval)
            self.ivh.sweep()

    def reset(self) -> None:
        """Back to empty: sessions closed and forgotten, journal and faults cleared."""
        self.ivh.reset()
        self.desk.reset()
        self.handover = Handover()
        self.journal.clear()
        self.faults.clear()

    def snapshot(self) -> dict[str, Any]:
        """The admin ``GET /emulator/state`` view."""
        now = self.ivh.now()
        return {
            "config": self.config.public(),
            "ivh": {
                "sessions": [s.admin_view(now) for s in self.ivh.live_sessions()],
                "closed_sessions": [s.admin_view(now) for s in self.ivh.closed.values()],
            },
            "desk": {
                "sessions": [s.view() for s in self.desk.live.values()],
                "ended_sessions": [s.view() for s in self.desk.ended.values()],
            },
            "sockets": sorted(self.channels),
            "faults": self.faults.list(),
            "journal": {"entries": len(self.journal), "next_index": self.journal.next_index},
        }

    async def aclose(self) -> None:
        """Close every channel (1001) and stop every background task."""
        for outlet in list(self.channels.values()):
            outlet.close(1001, "emulator shutting down")
        await self.tasks.aclose()
