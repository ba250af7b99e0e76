"""The HTTP endpoint (`http.listen`): /healthz, /readyz and /metrics (docs/configuration.md, issue
8)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator, Mapping

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.config.checks import parse_listen
from bridge.ops.metrics import Metrics
from bridge.ops.readout import Readout


def http_app(readout: Readout, metrics: Metrics) -> ASGIApp:
    """The ASGI app for one bridge: features' endpoints by exact path, then Starlette's routes."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        await readout.verify()
        ready, checks = readiness(readout)
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def exposition(request: Request) -> Response:
        body, content_type = metrics.render(request.headers.get("accept", ""))
        return Response(body, media_type=content_type)

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", exposition)]
    return _in_front(readout.endpoints(), Starlette(routes=routes))


def _in_front(endpoints: Mapping[str, ASGIApp], app: ASGIApp) -> ASGIApp:
    """Exact paths go straight to their endpoint, past Starlette's middleware and router (the
    Desk callback answers bursts: docs/desk.md "Figures"); the rest to `app`."""
    if not endpoints:
        return app

    async def front(scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = endpoints.get(scope["path"]) if scope["type"] == "http" else None
        await (endpoint or app)(scope, receive, send)

    return front


def readiness(readout: Readout) -> tuple[bool, dict[str, bool]]:
    """Ready when MQTT is connected and every service's last upstream call got through (a
    service not called yet, `reachable: null`, is not ready yet)."""
    snapshot = readout.snapshot()
    checks = {"mqtt": bool(snapshot["mqtt"]["connected"])}
    for name in readout.services():
        checks[name] = snapshot.get(name, {}).get("reachable") is True
    return all(checks.values()), checks


def split_listen(listen: str) -> tuple[str, int]:
    """ "127.0.0.1:9100" -> ("127.0.0.1", 9100); ":9100" binds loopback."""
    return parse_listen(listen)


async def serve_http(
    listen: str, readout: Readout, metrics: Metrics, *, sock: socket.socket | None = None
) -> None:
    """Serve on `listen` (on `sock` when it is bound already) until cancelled."""
    host, port = split_listen(listen)
    config = uvicorn.Config(
        http_app(readout, metrics),
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        proxy_headers=False,  # nothing here reads the client's address: not worth the work
        server_header=False,
    )
    server = QuietServer(config)
    try:
        await server.serve(sockets=[sock] if sock is not None else None)
    except asyncio.CancelledError:
        if server.started:
            await server.shutdown()
        raise


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install nothing: the bridge's own SIGTERM handler must keep working."""
        yield
