"""The command channel's proxy: websockets' own choice, looked up once per host."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from bridge.features.ivh.channel import _proxy_for, channel_proxy

PROXY_VARS = ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy", "all_proxy", "no_proxy")
URLS = [
    "wss://gw.tencentcloudapi.com/v2/ws/ivh/interactdriver/interactdriverservice/commandchannel?a=1",
    "ws://127.0.0.1:8080/v2/ws/ivh/commandchannel?appkey=k&timestamp=1",
    "wss://internal.example:8443/ch",
]
ENVIRONMENTS: list[dict[str, str]] = [
    {},
    {"https_proxy": "http://proxy.corp:3128"},
    {"http_proxy": "http://plain.corp:80"},
    {"wss_proxy": "http://ws-only.corp:1080", "https_proxy": "http://proxy.corp:3128"},
    {"all_proxy": "socks5h://socks.corp:1080"},
    {"https_proxy": "http://proxy.corp:3128", "no_proxy": "internal.example,127.0.0.1"},
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    _proxy_for.cache_clear()
    yield
    _proxy_for.cache_clear()


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("url", URLS)
def test_same_choice_as_websockets(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert channel_proxy(url) == get_proxy(parse_uri(url))


def test_environment_read_once_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.corp:3128")
    calls = []
    real = urllib.request.getproxies

    def counting() -> Any:
        calls.append(1)
        return real()

    monkeypatch.setattr(urllib.request, "getproxies", counting)
    for i in range(100):
        assert channel_proxy(f"{URLS[0]}&timestamp={i}") == "http://proxy.corp:3128"
    assert len(calls) == 1
    channel_proxy(URLS[1])  # another host: its own lookup
    assert len(calls) == 2


def test_a_failing_lookup_leaves_it_to_websockets(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> str | None:
        raise TypeError("changed signature")

    monkeypatch.setattr("bridge.features.ivh.channel.get_proxy", broken)
    assert channel_proxy(URLS[0]) is True  # connect(proxy=True): websockets looks it up
