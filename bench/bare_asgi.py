"""`python -m bench.bare_asgi PORT`: uvicorn with the bridge's HTTP settings and an ASGI app
that answers every request with the callback's OK at once, reading nothing else: the floor
for bench/desk_callback.py's burst (what uvicorn and asyncio cost without the bridge)."""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any

import uvicorn

OK = b'{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(OK))]


async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """Read the request, answer OK."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": OK})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        lifespan="off",
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
