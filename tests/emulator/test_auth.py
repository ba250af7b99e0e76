"""Signature (docs/protocol.md A.2) and UserSig (B.2) checks, against independent reference code."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import zlib

import httpx
import pytest
import TLSSigAPIv2
from hypothesis import given
from hypothesis import strategies as st

from bridge.emulator import Emulator
from bridge.emulator.auth import AuthError, check_usersig, decode_usersig, ivh_signature
from tests.emulator.helpers import IVH, code, desk, reference_signature, signed_query, usersig

BODY = {"Header": {}, "Payload": {"ReqId": "d7aa08da33dd4a662ad5be508c5b77cf"}}


def test_reference_signer_matches_official_vector() -> None:
    params = {"appkey": "e38267c0e86411ebb02aed82acb0ed99", "timestamp": "1646636485"}
    expected = "BfWuaC9kmaicCggXc693uK+sZQ8qe88O4HVQNTdwZuo="
    assert reference_signature(params, "f68f2d10ae9e4604b76fb05cf46bccec") == expected
    assert ivh_signature(params, "f68f2d10ae9e4604b76fb05cf46bccec") == expected


def test_second_official_vector() -> None:
    params = {"appkey": "example_appkey", "timestamp": "1717639699"}
    expected = "aCNWYzZdplxWVo+JsqzZc9+J9XrwWWITfX3eQpsLVno="
    assert ivh_signature(params, "example_accesstoken") == expected


async def _list(client: httpx.AsyncClient, query: str) -> httpx.Response:
    return await client.post(f"{IVH}listsessionofuin?{query}", json=BODY)


async def test_correctly_signed_request_is_accepted(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    response = await _list(client, signed_query(emu))
    assert response.status_code == 200
    assert code(response.json()) == 0


def _query(params: dict[str, str], sig: str | None) -> str:
    query = urllib.parse.urlencode(params)
    return query if sig is None else f"{query}&signature={urllib.parse.quote(sig, safe='')}"


@pytest.mark.parametrize("case", ["wrong_key", "stale", "future", "no_signature", "no_appkey"])
async def test_bad_signatures_are_rejected(
    emu: Emulator, client: httpx.AsyncClient, case: str
) -> None:
    now = int(time.time())
    stamp = {"stale": now - 400, "future": now + 400}.get(case, now)
    params = {"appkey": emu.config.appkey, "timestamp": str(stamp)}
    key = "not-the-token" if case == "wrong_key" else emu.config.access_token
    sig = reference_signature(params, key)
    if case == "no_appkey":
        del params["appkey"]
    response = await _list(client, _query(params, None if case == "no_signature" else sig))
    assert response.status_code == 401
    assert code(response.json()) == 100005


async def test_unencoded_signature_fails_like_the_real_gateway(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    # A.2 step 4: a raw '+' becomes a space in a query string, so signing must URL-encode.
    for stamp in range(int(time.time()), int(time.time()) - 200, -1):
        params = {"appkey": emu.config.appkey, "timestamp": str(stamp)}
        sig = reference_signature(params, emu.config.access_token)
        if "+" in sig:
            break
    response = await _list(client, urllib.parse.urlencode(params) + "&signature=" + sig)
    assert response.status_code == 401


async def test_signature_within_window_is_accepted(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    response = await _list(client, signed_query(emu, ts=int(time.time()) - 250))
    assert response.status_code == 200


# --- UserSig -------------------------------------------------------------------------------


def _reencode(fields: dict[str, object]) -> str:
    packed = base64.b64encode(zlib.compress(json.dumps(fields).encode())).decode()
    return packed.replace("+", "*").replace("/", "-").replace("=", "_")


async def test_official_usersig_is_accepted(emu: Emulator, client: httpx.AsyncClient) -> None:
    answer = await desk(client, emu, "get_session_state", {"SessionId": "nope"})
    assert answer["ErrorCode"] == 141005  # past authentication


async def test_tampered_sig_field_is_rejected(emu: Emulator, client: httpx.AsyncClient) -> None:
    fields = decode_usersig(usersig(emu))
    sig = str(fields["TLS.sig"])
    fields["TLS.sig"] = ("B" if sig[0] == "A" else "A") + sig[1:]
    answer = await desk(client, emu, "get_session_state", {}, usersig=_reencode(fields))
    assert (answer["ActionStatus"], answer["ErrorCode"]) == ("FAIL", 70009)


async def test_plain_base64_usersig_is_rejected(emu: Emulator, client: httpx.AsyncClient) -> None:
    """B.2 step 6 turns base64's `+/=` into `*-_`: a UserSig that skipped it is unparsable."""
    to_plain = str.maketrans("*-_", "+/=")
    candidates = (usersig(emu, expire=86400 + n).translate(to_plain) for n in range(100))
    plain = next(sig for sig in candidates if set("+/=") & set(sig))  # one that differs
    answer = await desk(client, emu, "get_session_state", {}, usersig=plain)
    assert answer["ErrorCode"] == 70003


async def test_usersig_of_another_version_is_rejected(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    fields = decode_usersig(usersig(emu))
    fields["TLS.ver"] = "1.0"
    answer = await desk(client, emu, "get_session_state", {}, usersig=_reencode(fields))
    assert answer["ErrorCode"] == 70003


async def test_flipped_usersig_character_is_rejected(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    good = usersig(emu)
    middle = len(good) // 2
    bad = good[:middle] + ("a" if good[middle] != "a" else "b") + good[middle + 1 :]
    answer = await desk(client, emu, "get_session_state", {}, usersig=bad)
    assert answer["ErrorCode"] in (70003, 70009)


async def test_expired_usersig_is_rejected(emu: Emulator, client: httpx.AsyncClient) -> None:
    answer = await desk(client, emu, "get_session_state", {}, usersig=usersig(emu, expire=-10))
    assert answer["ErrorCode"] == 70001


async def test_usersig_expiry_is_checked_on_every_call(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    """The signature check is kept per UserSig; its expiry must not be."""
    sig = usersig(emu, expire=100)
    first = await desk(client, emu, "get_session_state", {"SessionId": "x"}, usersig=sig)
    assert first["ErrorCode"] == 141005  # past authentication
    real_wall = emu.state.wall
    emu.state.wall = lambda: real_wall() + 200
    try:
        later = await desk(client, emu, "get_session_state", {"SessionId": "x"}, usersig=sig)
    finally:
        emu.state.wall = real_wall
    assert later["ErrorCode"] == 70001


def test_a_usersig_accepted_under_one_key_is_refused_under_another() -> None:
    """The kept checks are per key: what passed for one secret key is checked afresh."""
    api = TLSSigAPIv2.TLSSigAPIv2(1400000001, "first-key")
    sig = api.gen_sig("administrator", 600)
    now = time.time()
    check_usersig(
        sig, sdkappid=1400000001, identifier="administrator", secret_key="first-key", now=now
    )
    with pytest.raises(AuthError) as refused:
        check_usersig(
            sig, sdkappid=1400000001, identifier="administrator", secret_key="other-key", now=now
        )
    assert refused.value.code == 70009


async def test_usersig_signed_with_another_key_is_rejected(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    fields = decode_usersig(usersig(emu))
    fields["TLS.expire"] = 999_999  # changes the signed content
    answer = await desk(client, emu, "get_session_state", {}, usersig=_reencode(fields))
    assert answer["ErrorCode"] == 70009


async def test_usersig_for_another_identifier_is_rejected(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    sig = usersig(emu, identifier="someone-else")
    answer = await desk(client, emu, "get_session_state", {}, usersig=sig)
    assert answer["ErrorCode"] == 70013


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"sdkappid": ""}, 60012),
        ({"sdkappid": "1400000001"}, 60006),
        ({"identifier": "guest"}, 60010),
        ({"random": "4294967296"}, 60002),
        ({"random": "x"}, 60002),
        ({"contenttype": "xml"}, 60002),
        ({"usersig": ""}, 60004),
        ({"usersig": "not*a*usersig"}, 70003),
    ],
)
async def test_desk_url_checks(
    emu: Emulator, client: httpx.AsyncClient, overrides: dict[str, str], expected: int
) -> None:
    answer = await desk(client, emu, "get_session_state", {"SessionId": "s"}, **overrides)
    assert answer["ErrorCode"] == expected
    assert answer["ActionStatus"] == "FAIL"


async def test_sdkappid_differing_from_usersig_is_70014(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    fields = decode_usersig(usersig(emu))
    fields["TLS.sdkappid"] = emu.config.sdkappid + 1
    answer = await desk(client, emu, "get_session_state", {}, usersig=_reencode(fields))
    assert answer["ErrorCode"] == 70014


@given(st.text(max_size=300))
def test_decode_usersig_never_crashes(text: str) -> None:
    try:
        decode_usersig(text)
    except AuthError as exc:
        assert exc.code == 70003


@given(st.binary(max_size=300))
def test_decode_usersig_of_compressed_garbage(data: bytes) -> None:
    candidate = _reencode_bytes(zlib.compress(data))
    try:
        decode_usersig(candidate)
    except AuthError as exc:
        assert exc.code == 70003


def _reencode_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode().replace("+", "*").replace("/", "-").replace("=", "_")
