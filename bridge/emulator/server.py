"""The ASGI app and ``Emulator``, which serves it with uvicorn inside the caller's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp

from bridge.emulator.admin import general_routes
from bridge.emulator.admin_desk import desk_routes
from bridge.emulator.admin_desk_events import desk_event_routes
from bridge.emulator.admin_ivh import ivh_routes
from bridge.emulator.channel import command_channel
from bridge.emulator.config import EmulatorConfig
from bridge.emulator.desk_api import desk_endpoint
from bridge.emulator.faults import FaultMiddleware
from bridge.emulator.ivh_api import ivh_endpoint
from bridge.emulator.journal import JournalMiddleware
from bridge.emulator.state import EmulatorState
from bridge.emulator.wire import CHANNEL_PATH, DESK_API_PREFIX, IVH_API_PREFIX

logger = logging.getLogger(__name__)


def build_app(state: EmulatorState) -> ASGIApp:
    """The whole emulator as one ASGI app: both APIs, the channel, the admin API."""
    routes: list[BaseRoute] = [
        Route(IVH_API_PREFIX + "{api}", ivh_endpoint, methods=["POST"]),
        Route(DESK_API_PREFIX + "{command}", desk_endpoint, methods=["POST"]),
        WebSocketRoute(CHANNEL_PATH, command_channel),
        *general_routes(),
        *ivh_routes(),
        *desk_routes(),
        *desk_event_routes(),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = state
    # Outside Starlette's own middleware, so the fault injector sees the server's transport.
    return JournalMiddleware(FaultMiddleware(app, book=state.faults), journal=state.journal)


class _Server(uvicorn.Server):
    """uvicorn without signal handling (the embedding program owns its signals), quick to stop."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._wake = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave the process's signal handlers alone."""
        yield

    async def main_loop(self) -> None:
        """uvicorn's 0.1 s ticks, but woken at once by ``exit()``."""
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self._wake.wait()

    def exit(self) -> None:
        """Ask the server to shut down."""
        self.should_exit = True
        self._wake.set()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP (not 0) so asyncio sets TCP_NODELAY on accepted connections; without it
    # every answer written in two parts waits for the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class Emulator:
    """The emulator as an async context manager: ``async with Emulator(cfg) as emu: ...``."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig.generate()
        self.state = EmulatorState(self.config)
        self.port = 0
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` of both HTTP APIs and the admin API."""
        return f"http://{_url_host(self.config.host)}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The command-channel URL, without its query."""
        return f"ws://{_url_host(self.config.host)}:{self.port}{CHANNEL_PATH}"

    def info(self) -> dict[str, Any]:
        """URLs and credentials to point a bridge at this emulator (the CLI's first line)."""
        return {
            "ivh_base_url": self.base_url,
            "ivh_channel_url": self.ws_url,
            "desk_base_url": self.base_url,
            "appkey": self.config.appkey,
            "access_token": self.config.access_token,
            "sdkappid": self.config.sdkappid,
            "identifier": self.config.identifier,
            "secret_key": self.config.secret_key,
        }

    async def start(self) -> None:
        """Bind, start serving and return once the server accepts connections."""
        sock = _listen(self.config.host, self.config.port)
        self.port = sock.getsockname()[1]
        self._server = _Server(self._uvicorn_config())
        self.state.start()
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="emulator")
        while not self._server.started:
            if self._task.done():
                await self.state.aclose()
                self._task.result()
                raise RuntimeError("the emulator stopped while starting")
            await asyncio.sleep(0.005)
        logger.info("emulator listening on %s", self.base_url)

    def _uvicorn_config(self) -> uvicorn.Config:
        return uvicorn.Config(
            build_app(self.state),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            http="httptools",
            ws="websockets-sansio",
            ws_max_size=1024 * 1024,
            timeout_graceful_shutdown=3,
        )

    async def stop(self) -> None:
        """Close every socket, stop the server and every background task."""
        await self.state.aclose()
        if self._server is not None and self._task is not None:
            self._server.exit()
            await self._task
        self._server = self._task = None
        logger.info("emulator stopped")

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
