"""Checks of single config values (docs/configuration.md): URLs with the right scheme and a
host, `host:port` listen addresses, topics, session ids. Each raises `ValueError` with a message
that never repeats a credential; `bridge.config` turns it into a line naming the key."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import NamedTuple
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from bridge.ids import valid_session_id

_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
SESSION_ID_RULE = "1-128 letters, digits or ._:@- starting with a letter or digit"


class Credentials(NamedTuple):
    """A URL without its user information, and that user name and password (None: absent)."""

    url: str
    username: str | None
    password: str | None


def split_credentials(url: str) -> Credentials:
    """`mqtt://alice:pw@host` -> (`mqtt://host`, "alice", "pw"), percent-decoded."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return Credentials(url, None, None)
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit(parts._replace(netloc=host))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return Credentials(bare, user, password)


def check_url(value: str, *, schemes: tuple[str, ...], example: str) -> SplitResult:
    """A URL of one of `schemes`, with a valid host and port and no user information."""
    parts = urlsplit(value)
    if parts.scheme not in schemes or not value.lower().startswith(f"{parts.scheme}://"):
        wanted = " or ".join(f"{s}://" for s in schemes[:2])
        raise ValueError(f"must be a URL starting with {wanted}, e.g. {example}")
    if "@" in parts.netloc:
        raise ValueError("must not hold a user name or password")
    check_host(parts.hostname or "", example=example)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (parts.netloc.endswith(":") and port is None):
        raise ValueError("has a port that is not a number from 1 to 65535")
    if parts.query or parts.fragment:
        raise ValueError("must not have a ?query or #fragment")
    return parts


def check_host(host: str, *, example: str) -> None:
    """A host name or an IP address."""
    if not host:
        raise ValueError(f"must name a host, e.g. {example}")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"has an invalid IPv6 address, e.g. {example}") from None
    elif not _HOSTNAME.fullmatch(host) or ".." in host:
        raise ValueError(f"has an invalid host name, e.g. {example}")


def parse_listen(listen: str) -> tuple[str, int]:
    """ "127.0.0.1:9100" -> ("127.0.0.1", 9100); ":9100" binds loopback; "[::1]:9100" IPv6."""
    host, colon, port = listen.strip().rpartition(":")
    example = "127.0.0.1:9100"
    if not colon:
        raise ValueError(f'must be "host:port", e.g. "{example}" (or "" for no endpoint)')
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("has a port that is not a number from 1 to 65535")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f'has an unclosed IPv6 bracket, e.g. "[::1]:9100" or "{example}"')
    host = host.strip("[]") or "127.0.0.1"
    check_host(host, example=example)
    return host, int(port)


def check_topic_root(value: str) -> str:
    """A topic prefix: not empty, no wildcards, NUL or outer slashes."""
    if not value or any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/"):
        raise ValueError("must be a non-empty topic without wildcards or outer slashes")
    return value


def check_session_ids(values: tuple[str, ...]) -> tuple[str, ...]:
    """Every value a session id as docs/topics.md defines it (they become topics and API calls)."""
    for index, value in enumerate(values):
        if not valid_session_id(value):
            shown = json.dumps(value[:40] if isinstance(value, str) else value)
            raise ValueError(f"item {index + 1} ({shown}) is not a session id: {SESSION_ID_RULE}")
    return values
