"""IVH request signing (docs/protocol.md A.2): pure functions, the command-channel URL, `IvhAuth`.

The signature is `base64(HMAC-SHA256(key=accesstoken, msg=<sorted "k=v" pairs joined by "&">))`
over every query parameter except `signature`; the body is not signed. It goes into the URL
URL-encoded with `quote(safe='')`, because a raw `+`, `/` or `=` fails intermittently.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import SecretStr

CHANNEL_PATH = "/v2/ws/ivh/interactdriver/interactdriverservice/commandchannel"
_WS_SCHEMES = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}


def signing_content(params: Mapping[str, str]) -> str:
    """The signed string: parameters sorted by name, `name=value` joined by `&` (docs/protocol.md
    A.2)."""
    # Values go in raw, not URL-encoded, as in the official examples (docs/protocol.md A.2 step 2).
    return "&".join(f"{name}={params[name]}" for name in sorted(params) if name != "signature")


def ivh_signature(params: Mapping[str, str], access_token: str) -> str:
    """The raw standard-base64 signature; the access token is the HMAC key (docs/protocol.md
    A.2)."""
    message = signing_content(params).encode("utf-8")
    digest = hmac.new(access_token.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"


def url_quote(text: str) -> str:
    """`quote(text, safe='')`. A UserSig's `*`s send it down quote's slow path, 30 us of each
    Desk call, so what needs escaping is remembered (a few: the UserSig changes rarely)."""
    if not text.strip(_UNRESERVED):  # nothing to escape: ids, numbers, timestamps
        return text
    return _escaped(text)


@lru_cache(maxsize=8)
def _escaped(text: str) -> str:
    return quote(text, safe="")


def query_string(params: Mapping[str, str]) -> str:
    """`name=value` pairs, in order, each side URL-encoded with `quote(safe='')`."""
    return "&".join(f"{url_quote(name)}={url_quote(value)}" for name, value in params.items())


def signed_query(params: Mapping[str, str], access_token: str) -> str:
    """The query string of `params` plus their URL-encoded `signature`."""
    return _signed_query(tuple(sorted(params.items())), access_token)


@lru_cache(maxsize=16)
def _signed_query(items: tuple[tuple[str, str], ...], access_token: str) -> str:
    # Kept: the same parameters give the same signature, and calls within one second share
    # their timestamp (1,000 calls/s: one HMAC and one escaping instead of 1,000).
    signature = ivh_signature(dict(items), access_token)
    pairs = [f"{url_quote(name)}={url_quote(value)}" for name, value in items]
    pairs.append(f"signature={quote(signature, safe='')}")  # kept above, not in `_escaped`
    return "&".join(pairs)


def ivh_query(
    *, appkey: str, access_token: str, timestamp: int, requestid: str | None = None
) -> str:
    """The full signed query: `appkey`, `[requestid]`, `timestamp`, `signature`."""
    params = {"appkey": appkey, "timestamp": str(timestamp)}
    if requestid is not None:
        params["requestid"] = requestid
    return signed_query(params, access_token)


def channel_url(
    ws_base: str,
    *,
    appkey: str,
    access_token: str,
    session_id: str,
    timestamp: int | None = None,
) -> str:
    """The signed command-channel URL; `requestid` must be the SessionId (docs/protocol.md A.4)."""
    ts = int(time.time()) if timestamp is None else timestamp
    query = ivh_query(appkey=appkey, access_token=access_token, timestamp=ts, requestid=session_id)
    return f"{ws_base}?{query}"


def default_channel_url(base_url: str) -> str:
    """The command-channel URL on the same host as the HTTPS gateway (docs/protocol.md A.1, A.4)."""
    parts = urlsplit(base_url)
    scheme = _WS_SCHEMES.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s) URL: scheme {parts.scheme!r}")
    path = parts.path.rstrip("/") + CHANNEL_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class IvhAuth:
    """Signs every request, and every retry, with a fresh timestamp (docs/protocol.md A.2, C.2)."""

    def __init__(
        self, *, appkey: str, access_token: SecretStr | str, clock: Callable[[], float] = time.time
    ) -> None:
        self._appkey = appkey
        self._token = SecretStr(access_token) if isinstance(access_token, str) else access_token
        self._clock = clock

    def query(self, params: Mapping[str, str]) -> str:
        """`params` (any `signature` dropped) plus `appkey` and `timestamp`, signed."""
        signed = {**params, "appkey": self._appkey, "timestamp": str(int(self._clock()))}
        signed.pop("signature", None)
        return signed_query(signed, self._token.get_secret_value())

    def __repr__(self) -> str:
        return f"IvhAuth(appkey={self._appkey!r}, access_token=SecretStr('**********'))"
