"""IVH signing (docs/protocol.md A.2, A.4): official vectors, key order, the Auth and the channel
URL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.tencent.signing import (
    IvhAuth,
    channel_url,
    default_channel_url,
    ivh_query,
    ivh_signature,
    query_string,
    signing_content,
)

VECTOR_APPKEY = "e38267c0e86411ebb02aed82acb0ed99"
VECTOR_TOKEN = "f68f2d10ae9e4604b76fb05cf46bccec"
VECTOR_SIG = "BfWuaC9kmaicCggXc693uK+sZQ8qe88O4HVQNTdwZuo="
VECTOR_SIG_URL = "BfWuaC9kmaicCggXc693uK%2BsZQ8qe88O4HVQNTdwZuo%3D"
CHANNEL = "wss://gw.tvs.qq.com/v2/ws/ivh/interactdriver/interactdriverservice/commandchannel"


def test_official_vector_one() -> None:
    params = {"appkey": VECTOR_APPKEY, "timestamp": "1646636485"}
    assert signing_content(params) == f"appkey={VECTOR_APPKEY}&timestamp=1646636485"
    assert ivh_signature(params, VECTOR_TOKEN) == VECTOR_SIG


def test_official_vector_one_as_query() -> None:
    query = ivh_query(appkey=VECTOR_APPKEY, access_token=VECTOR_TOKEN, timestamp=1646636485)
    assert query == f"appkey={VECTOR_APPKEY}&timestamp=1646636485&signature={VECTOR_SIG_URL}"


def test_official_vector_two() -> None:
    params = {"timestamp": "1717639699", "appkey": "example_appkey"}
    assert ivh_signature(params, "example_accesstoken") == (
        "aCNWYzZdplxWVo+JsqzZc9+J9XrwWWITfX3eQpsLVno="
    )


def test_token_is_the_key_not_the_message() -> None:
    content = f"appkey={VECTOR_APPKEY}&timestamp=1646636485"
    swapped = hmac.new(content.encode(), VECTOR_TOKEN.encode(), hashlib.sha256).digest()
    assert base64.b64encode(swapped).decode() != VECTOR_SIG


def test_requestid_sorts_between_appkey_and_timestamp() -> None:
    params = {"timestamp": "1", "requestid": "m123", "appkey": "k", "signature": "ignored"}
    assert signing_content(params) == "appkey=k&requestid=m123&timestamp=1"
    unsorted = hmac.new(b"t", b"appkey=k&timestamp=1&requestid=m123", hashlib.sha256).digest()
    assert ivh_signature(params, "t") != base64.b64encode(unsorted).decode()


def test_signature_is_excluded_from_its_own_content() -> None:
    params = {"appkey": VECTOR_APPKEY, "timestamp": "1646636485"}
    assert ivh_signature({**params, "signature": "x"}, VECTOR_TOKEN) == VECTOR_SIG


def test_channel_url_signs_the_session_id_as_requestid() -> None:
    url = channel_url(CHANNEL, appkey="k", access_token="t", session_id="m123", timestamp=7)
    base, _, query = url.partition("?")
    params = dict(parse_qsl(query))
    assert base == CHANNEL
    assert list(params) == ["appkey", "requestid", "timestamp", "signature"]
    assert params["requestid"] == "m123"
    expected = ivh_signature({"appkey": "k", "requestid": "m123", "timestamp": "7"}, "t")
    assert params["signature"] == expected
    assert f"signature={quote(expected, safe='')}" in query


def test_channel_url_uses_the_current_time_by_default() -> None:
    url = channel_url(CHANNEL, appkey="k", access_token="t", session_id="s")
    timestamp = int(dict(parse_qsl(urlsplit(url).query))["timestamp"])
    assert abs(timestamp - time.time()) < 5


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://gw.tvs.qq.com", CHANNEL),
        ("https://gw-sg.tvs.qq.com/", CHANNEL.replace("gw.", "gw-sg.")),
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080" + CHANNEL.split("qq.com")[1]),
        ("http://h:1/prefix/", "ws://h:1/prefix" + CHANNEL.split("qq.com")[1]),
    ],
)
def test_default_channel_url(base: str, expected: str) -> None:
    assert default_channel_url(base) == expected


@pytest.mark.parametrize("base", ["ftp://h", "gw.tvs.qq.com", "https://"])
def test_default_channel_url_rejects_non_http(base: str) -> None:
    with pytest.raises(ValueError):
        default_channel_url(base)


def test_auth_signs_with_a_fresh_timestamp_per_request() -> None:
    times = iter([1646636485.9, 1646636490.2])
    auth = IvhAuth(appkey=VECTOR_APPKEY, access_token=VECTOR_TOKEN, clock=lambda: next(times))
    first, second = auth.query({}), auth.query({})
    assert first == f"appkey={VECTOR_APPKEY}&timestamp=1646636485&signature={VECTOR_SIG_URL}"
    params, first_params = dict(parse_qsl(second)), dict(parse_qsl(first))
    assert params["timestamp"] == "1646636490"
    assert params["signature"] != first_params["signature"]


def test_auth_signs_existing_query_parameters_too() -> None:
    auth = IvhAuth(appkey="k", access_token="t", clock=lambda: 5.0)
    params = dict(parse_qsl(auth.query({"zeta": "1", "signature": "stale"})))
    assert params["signature"] == ivh_signature({"appkey": "k", "timestamp": "5", "zeta": "1"}, "t")


def test_auth_repr_hides_the_token() -> None:
    auth = IvhAuth(appkey="k", access_token=VECTOR_TOKEN)
    assert VECTOR_TOKEN not in repr(auth)
    assert VECTOR_TOKEN not in str(auth)


@given(st.dictionaries(st.text(), st.text(), max_size=6))
def test_query_string_encodes_as_urlencode_does(params: dict[str, str]) -> None:
    """Its cache changes nothing: the standard library's encoding, every time."""
    expected = urlencode(params, quote_via=quote)
    assert query_string(params) == expected
    assert query_string(params) == expected


names = st.sampled_from(["appkey", "timestamp", "requestid", "x y", "a*b", "é"])


@given(
    st.lists(st.dictionaries(names, st.text(max_size=12), max_size=4), min_size=1, max_size=6),
    st.sampled_from(["t1", "t2"]),
)
def test_signed_queries_made_again_and_kept_read_the_same(
    many: list[dict[str, str]], token: str
) -> None:
    """Signed queries are kept between calls (one HMAC per second at most): any sequence of
    them must equal the query built afresh, by the stdlib, for its own parameters and key."""
    for params in many:
        query = IvhAuth(appkey=params.get("appkey", "k"), access_token=token).query(params)
        signed = {**params, "appkey": params.get("appkey", "k")}
        signed["timestamp"] = dict(parse_qsl(query))["timestamp"]
        fresh = sorted(signed.items())
        expected = urlencode(fresh, quote_via=quote, safe="")
        expected += "&signature=" + quote(ivh_signature(signed, token), safe="")
        assert query == expected
