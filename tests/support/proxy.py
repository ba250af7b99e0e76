"""A small real HTTP proxy on a free loopback port: CONNECT tunnels and forwarded requests.

What a corporate proxy does for the bridge's upstream calls: `CONNECT host:port` for https
(bytes relayed both ways, TLS end to end), and absolute-form requests (`POST http://host/...`)
for plain http, forwarded on a fresh connection. It records what it was asked, so a test can
tell that a request went through it. `refuse=True` answers every CONNECT with 403.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_HEAD_LIMIT = 64 * 1024


@dataclass
class Proxy:
    """The running proxy: its URL and what it saw (`CONNECT host:port` or `POST url`)."""

    refuse: bool = False
    seen: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: a tunnel, or forwarded requests until it closes."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
                self.seen.append(f"{method} {target}")
                if method == "CONNECT":
                    await self._tunnel(target, reader, writer)
                    return
                await self._forward(head, target, reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _tunnel(
        self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.refuse:
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        host, _, port = target.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def _forward(
        self,
        head: bytes,
        target: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        parts = urlsplit(target)
        length = _content_length(head)
        body = await reader.readexactly(length) if length else b""
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        first, rest = head.split(b"\r\n", 1)
        method = first.split(b" ", 1)[0]
        request = method + b" " + path.encode("latin-1") + b" HTTP/1.1\r\n" + rest
        up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        try:
            up_writer.write(request + body)
            await up_writer.drain()
            answer = await up_reader.readuntil(b"\r\n\r\n")
            length = _content_length(answer)
            writer.write(answer + (await up_reader.readexactly(length) if length else b""))
            await writer.drain()
        finally:
            up_writer.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def running_proxy(*, refuse: bool = False) -> AsyncIterator[Proxy]:
    """Serve a `Proxy` on 127.0.0.1 until the block ends."""
    proxy = Proxy(refuse=refuse)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0, limit=_HEAD_LIMIT)
    proxy.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield proxy
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)
