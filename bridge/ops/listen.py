"""The socket of the HTTP endpoint (`http.listen`), bound before anything else starts, so a port
in use or an address not on this host ends `run` with one line instead of a task failing
forever (docs/configuration.md, "http.listen")."""

from __future__ import annotations

import socket


class ListenError(Exception):
    """`http.listen` cannot be bound; the message names the key, the address and why."""


def bind_listen(host: str, port: int) -> socket.socket:
    """A bound, non-blocking TCP socket on (host, port); uvicorn listens on it."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ListenError(f"http.listen {where}: unknown host ({exc.strerror})") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ListenError(f"http.listen {where}: cannot listen: {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock
