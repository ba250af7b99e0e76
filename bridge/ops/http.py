"""The HTTP endpoint (`http.listen`): /healthz, /readyz and /metrics (SPEC 4, issue 8)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bridge.ops.metrics import Metrics
from bridge.ops.readout import Readout


def http_app(readout: Readout, metrics: Metrics) -> Starlette:
    """The ASGI app for one bridge."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        ready, checks = readiness(readout)
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def exposition(_: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", exposition)]
    return Starlette(routes=routes)


def readiness(readout: Readout) -> tuple[bool, dict[str, bool]]:
    """Ready when MQTT is connected and every service's last upstream call got through."""
    snapshot = readout.snapshot()
    checks = {"mqtt": bool(snapshot["mqtt"]["connected"])}
    for name in readout.services():
        checks[name] = bool(snapshot.get(name, {}).get("reachable", True))
    return all(checks.values()), checks


def split_listen(listen: str) -> tuple[str, int]:
    """ "127.0.0.1:9100" -> ("127.0.0.1", 9100); ":9100" binds loopback."""
    host, _, port = listen.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


async def serve_http(listen: str, readout: Readout, metrics: Metrics) -> None:
    """Serve on `listen` until cancelled."""
    host, port = split_listen(listen)
    config = uvicorn.Config(
        http_app(readout, metrics),
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
    )
    server = QuietServer(config)
    try:
        await server.serve()
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
