"""The HTTP sessions and retry policy the Tencent clients are built with.

One `aiohttp.ClientSession` per service: keep-alive connections, TLS verified (the system's
trust store, or the context given), the service's timeout, and the proxy the environment names
(`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`). The proxy is read once per host, as aiohttp's
`trust_env` would read it, rather than through `trust_env` itself: that reads the environment
and `~/.netrc` in a worker thread on every request, two thread hops per call
(docs/performance.md "HTTP client").
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Mapping
from typing import Self
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from bridge import __version__
from bridge.config import RetryConfig
from bridge.tencent.fastpost import FastPoster
from bridge.tencent.retry import RetryPolicy

USER_AGENT = f"tencent2mqtt/{__version__}"
MAX_CONNECTIONS = 200  # per service, as before: the load tests open up to 200 at once
Proxy = tuple[URL, aiohttp.BasicAuth | None]


class SessionClosed(aiohttp.ClientConnectionError):
    """A request after `aclose()`: it was never sent."""


def retry_policy(cfg: RetryConfig) -> RetryPolicy:
    """The clients' retry policy from `[retry]`."""
    return RetryPolicy(
        attempts=cfg.attempts,
        initial_delay=cfg.initial_delay,
        max_delay=cfg.max_delay,
        deadline=cfg.deadline,
    )


class HttpSession:
    """One Tencent service's HTTP session; opened on first use, inside the event loop."""

    def __init__(
        self,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        fast_path: bool = False,
    ) -> None:
        # Connect (a free slot included) and each read are bounded, as the `request_timeout`
        # setting says; the whole exchange is not, so a slow but live answer still arrives.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._proxies: dict[str, Proxy | None] = {}
        self._session: aiohttp.ClientSession | None = None
        self._fast_path = fast_path  # bridge/tencent/fastpost.py; the caller checked the release
        self._fast: FastPoster | None = None
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise SessionClosed("the HTTP session is closed")
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, ssl=self._ssl)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"User-Agent": USER_AGENT},
            cookie_jar=aiohttp.DummyCookieJar(),  # the APIs set none; a jar costs per call
        )
        if self._fast_path:
            self._fast = FastPoster(
                self._session, timeout=self._timeout, ssl_context=self._ssl, user_agent=USER_AGENT
            )
        return self._session

    async def post(
        self, url: str, query: str, content: bytes, headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        """POST `content` to `url` + `?query` (already encoded, sent as it is): the status and
        the body, decompressed. Failures raise aiohttp's exceptions."""
        session = self._session if self._session is not None else self._open()
        if session.closed:
            raise SessionClosed("the HTTP session is closed")
        proxy, proxy_auth = self._proxy(url) or (None, None)
        fast = self._fast
        if fast is not None and proxy is None and fast.accepts(url, query, content, headers):
            return await fast.post(url, query, content, headers)
        # encoded=True: the signature was computed over this exact escaping (docs/protocol.md A.2)
        target = URL(f"{url}?{query}" if query else url, encoded=True)
        async with session.post(
            target,
            data=content,
            headers=headers,
            proxy=proxy,
            proxy_auth=proxy_auth,
            allow_redirects=False,
        ) as response:
            return response.status, await response.read()

    def _proxy(self, url: str) -> Proxy | None:
        try:
            return self._proxies[url]  # one entry per API URL: a handful
        except KeyError:
            parts = urlsplit(url)
            proxy = self._proxies[url] = environment_proxy(parts.scheme, parts.hostname or "")
            return proxy

    @property
    def closed(self) -> bool:
        """`aclose()` has run."""
        return self._closed

    async def aclose(self) -> None:
        """Close the session and its connections; later requests fail as never sent."""
        self._closed = True
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def environment_proxy(scheme: str, host: str) -> Proxy | None:
    """The proxy the environment names for `scheme://host`, with its credentials, or None
    (none set, or `NO_PROXY` covers the host): the rules aiohttp's `trust_env` follows."""
    proxies = urllib.request.getproxies_environment()
    value = proxies.get(scheme)
    if not host or not value or urllib.request.proxy_bypass(host):
        return None
    proxy = URL(value)
    auth = aiohttp.BasicAuth(proxy.user or "", proxy.password or "") if proxy.user else None
    return proxy.with_user(None), auth


def http_client(timeout: float, *, fast_path: bool = False) -> HttpSession:
    """The HTTP session for one Tencent API, with the service's timeout; `fast_path` as
    `bridge.tencent.fastpost.enabled` decided at start."""
    return HttpSession(timeout=timeout, fast_path=fast_path)
