"""Secrets never reach an error message, a repr or a log line (SPEC 3.7)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import BridgeError
from bridge.tencent.desk import DeskClient
from bridge.tencent.ivh import IvhClient
from bridge.tencent.redact import RedactQueryFilter, redact_query
from tests.unit.tencent.tencent_fakes import (
    FAST,
    Script,
    Step,
    Ticker,
    desk_err,
    http_client,
    ivh_err,
)

secret_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789+/=", min_size=24, max_size=64)
FAILURES: list[Step] = [
    (500, "x"),
    (401, ""),
    (200, "garbage"),
    httpx.ReadTimeout,
    httpx.ConnectError,
    httpx.UnsupportedProtocol,
    httpx.DecodingError,
]


def _ivh(script: Script, token: str) -> IvhClient:
    return IvhClient(
        http_client(script), base_url="https://gw", appkey="key", access_token=token, retry=FAST
    )


def _desk(script: Script, secret: str) -> DeskClient:
    return DeskClient(
        http_client(script),
        base_url="https://desk",
        sdkappid=1400000000,
        identifier="admin",
        secret_key=secret,
        retry=FAST,
        clock=Ticker(),
    )


async def _error(call: Callable[[], Awaitable[object]]) -> BridgeError:
    with pytest.raises(BridgeError) as info:
        await call()
    return info.value


def _sent_secrets(script: Script) -> list[str]:
    """The usersigs and signatures that went over the wire."""
    return [
        value
        for request in script.requests
        for name, value in request.url.params.items()
        if name in ("usersig", "signature")
    ]


def _assert_hidden(texts: list[str], secrets: list[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=secret_text, step=st.sampled_from([*FAILURES, ivh_err(100005, "x")]))
def test_ivh_errors_and_repr_hide_the_token(token: str, step: Step) -> None:
    script = Script(step)
    client = _ivh(script, token)
    error = asyncio.run(_error(lambda: client.stat_session("m1")))
    texts = [str(error), repr(error), str(error.to_dict()), repr(client), str(client)]
    _assert_hidden(texts, [token, *_sent_secrets(script)])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=secret_text, step=st.sampled_from([*FAILURES, desk_err(70001), desk_err(93000)]))
def test_desk_errors_and_repr_hide_the_key_and_usersig(secret: str, step: Step) -> None:
    script = Script(step)
    client = _desk(script, secret)
    error = asyncio.run(_error(lambda: client.send_stream_msg(session_id="s", chunk="c")))
    texts = [str(error), repr(error), str(error.to_dict()), repr(client), str(client)]
    _assert_hidden(texts, [secret, *_sent_secrets(script)])


@pytest.mark.parametrize("redacting", [False, True])
async def test_no_secret_is_logged_even_when_upstream_echoes_it(
    caplog: pytest.LogCaptureFixture, redacting: bool
) -> None:
    """The bridge's own lines never hold a secret; httpx's URL lines need the filter."""
    caplog.set_level(logging.DEBUG)
    if redacting:
        caplog.handler.addFilter(RedactQueryFilter())
    token, secret = "ivh-token-0123456789abcdef", "desk-secret-0123456789abcdef"
    ivh_script = Script(ivh_err(-101000, f"bad token {token}"), ivh_err(100005, token))
    await _error(lambda: _ivh(ivh_script, token).start_session("m1"))

    echoes: list[str] = []

    def echo(request: httpx.Request) -> httpx.Response:
        echoes.append(request.url.params["usersig"])
        info = f"usersig {request.url.params['usersig']} with key {secret} rejected"
        return httpx.Response(200, json=desk_err(70001 if len(echoes) < 3 else 141002, info))

    desk = DeskClient(
        http_client(echo),
        base_url="https://d",
        sdkappid=1,
        identifier="a",
        secret_key=secret,
        retry=FAST,
        clock=Ticker(),
    )
    await _error(lambda: desk.end_session("s1"))
    await _error(lambda: desk.get_session_state(session_id="s1"))
    assert any(r.name.startswith("bridge.tencent") for r in caplog.records)
    assert any(r.name == "httpx" for r in caplog.records)
    checked = [r for r in caplog.records if redacting or r.name.startswith("bridge")]
    _assert_hidden(
        [r.getMessage() for r in checked],
        [token, secret, *echoes, *_sent_secrets(ivh_script)],
    )


def test_redact_query_hides_usersig_and_signature() -> None:
    line = 'HTTP Request: POST https://h/p?sdkappid=1&usersig=eJy*-_&random=5 "HTTP/1.1 200 OK"'
    assert redact_query(line) == (
        'HTTP Request: POST https://h/p?sdkappid=1&usersig=***&random=5 "HTTP/1.1 200 OK"'
    )
    assert (
        redact_query("wss://h/c?appkey=k&signature=ab%2Bc%3D") == "wss://h/c?appkey=k&signature=***"
    )
