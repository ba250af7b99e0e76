"""Secrets never reach an error message, a repr or a log line (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping

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
    bad_scheme,
    connect_timeout,
    desk_err,
    dropped,
    garbled,
    ivh_err,
    read_timeout,
    refused,
    truncated,
    untrusted,
)

secret_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789+/=", min_size=24, max_size=64)
FAILURES: list[Step] = [
    (500, "x"),
    (401, ""),
    (200, "garbage"),
    read_timeout,
    refused,
    dropped,
    truncated,
    untrusted,
    # aiohttp's texts of these hold the whole signed URL
    connect_timeout,
    garbled,
    bad_scheme,
]


def _ivh(script: Script, token: str) -> IvhClient:
    return IvhClient(script, base_url="https://gw", appkey="key", access_token=token, retry=FAST)


def _desk(script: Script, secret: str) -> DeskClient:
    return DeskClient(
        script,
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
        for name, value in request.url.query.items()
        if name in ("usersig", "signature")
    ]


def _texts(error: BaseException) -> list[str]:
    """What an error can show: its text, repr, envelope and whole traceback, causes included."""
    shown = [str(error), repr(error), "".join(traceback.format_exception(error))]
    if isinstance(error, BridgeError):
        shown.append(str(error.to_dict()))
    return shown


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
    texts = [*_texts(error), repr(client), str(client)]
    _assert_hidden(texts, [token, *_sent_secrets(script)])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=secret_text, step=st.sampled_from([*FAILURES, desk_err(70001), desk_err(93000)]))
def test_desk_errors_and_repr_hide_the_key_and_usersig(secret: str, step: Step) -> None:
    script = Script(step)
    client = _desk(script, secret)
    error = asyncio.run(_error(lambda: client.send_stream_msg(session_id="s", chunk="c")))
    texts = [*_texts(error), repr(client), str(client)]
    _assert_hidden(texts, [secret, *_sent_secrets(script)])


@pytest.mark.parametrize("redacting", [False, True])
async def test_no_secret_is_logged_even_when_upstream_echoes_it(
    caplog: pytest.LogCaptureFixture, redacting: bool
) -> None:
    """The bridge's own lines never hold a secret; a library's URL lines need the filter."""
    caplog.set_level(logging.DEBUG)
    if redacting:
        caplog.handler.addFilter(RedactQueryFilter())
    token, secret = "ivh-token-0123456789abcdef", "desk-secret-0123456789abcdef"
    ivh_script = Script(ivh_err(-101000, f"bad token {token}"), ivh_err(100005, token))
    await _error(lambda: _ivh(ivh_script, token).start_session("m1"))

    echoes = Echo(secret)
    desk = DeskClient(
        echoes,
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
    checked = [r for r in caplog.records if redacting or r.name.startswith("bridge")]
    _assert_hidden(
        [r.getMessage() for r in checked],
        [token, secret, *echoes.usersigs, *_sent_secrets(ivh_script)],
    )


class Echo(Script):
    """A Desk that rejects the UserSig twice, echoing it and the key in its error text."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.usersigs: list[str] = []

    async def post(
        self, url: str, query: str, content: bytes, headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        """The 70001 (then 141002) answer naming what was sent."""
        sent = await self._record(url, query, content, headers)
        usersig = sent.url.query["usersig"]
        self.usersigs.append(usersig)
        info = f"usersig {usersig} with key {self.secret} rejected"
        body = desk_err(70001 if len(self.usersigs) < 3 else 141002, info)
        return 200, json.dumps(body).encode()


@pytest.mark.parametrize("failure", [connect_timeout, garbled, bad_scheme])
async def test_aiohttp_texts_with_the_signed_url_stay_out_of_the_error(failure: Step) -> None:
    """The test itself can fail: aiohttp's own exception text shows the usersig."""
    script = Script(failure)
    error = await _error(lambda: _desk(script, "k" * 32).end_session("s1"))
    (usersig,) = set(_sent_secrets(script))
    assert callable(failure)
    assert usersig in str(failure(script.requests[0]))  # aiohttp's text
    _assert_hidden(_texts(error), [usersig])
    assert error.__cause__ is not None and error.__context__ is None


def test_redact_query_hides_usersig_and_signature() -> None:
    line = 'HTTP Request: POST https://h/p?sdkappid=1&usersig=eJy*-_&random=5 "HTTP/1.1 200 OK"'
    assert redact_query(line) == (
        'HTTP Request: POST https://h/p?sdkappid=1&usersig=***&random=5 "HTTP/1.1 200 OK"'
    )
    assert (
        redact_query("wss://h/c?appkey=k&signature=ab%2Bc%3D") == "wss://h/c?appkey=k&signature=***"
    )
