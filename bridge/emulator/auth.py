"""Credential checks, written from docs/protocol.md alone (A.2 IVH signature, B.2 UserSig).

Nothing here is shared with the bridge's own signing code (``bridge.tencent``): the two sides are
written independently so that one misreading of the protocol cannot pass both.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import zlib
from collections.abc import Mapping
from typing import Any

# docs/protocol.md A.2: the gateway's code for a bad signature is not documented; 100005 is A.7's
# "unauthorised operation".
IVH_UNAUTHORISED = 100005

# docs/protocol.md B.7 codes.
USERSIG_EXPIRED = 70001
USERSIG_UNPARSABLE = 70003
USERSIG_BAD_SIGNATURE = 70009
USERSIG_WRONG_IDENTIFIER = 70013
USERSIG_WRONG_SDKAPPID = 70014

_MAX_USERSIG_JSON = 16 * 1024
_TENCENT_B64 = str.maketrans("*-_", "+/=")
_PLAIN_B64 = frozenset("+/=")


class AuthError(Exception):
    """A credential was missing or wrong; ``code`` is the upstream error code to answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def ivh_signing_content(params: Mapping[str, str]) -> str:
    """A.2 steps 1-2: every parameter but ``signature``, sorted by name, joined as k=v&..."""
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")


def ivh_signature(params: Mapping[str, str], access_token: str) -> str:
    """A.2 step 3: standard Base64 of HMAC-SHA256 keyed with the access token (not URL-encoded)."""
    content = ivh_signing_content(params).encode()
    digest = hmac.new(access_token.encode(), content, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def check_ivh_query(
    query: Mapping[str, str],
    *,
    appkey: str,
    access_token: str,
    now: float,
    window: float,
    channel: bool = False,
) -> None:
    """Raise AuthError(100005) unless the query is signed as A.2 says, within the time window."""
    required = ("appkey", "timestamp", "signature") + (("requestid",) if channel else ())
    missing = [name for name in required if not query.get(name)]
    if missing:
        raise AuthError(IVH_UNAUTHORISED, f"missing query parameter: {', '.join(missing)}")
    if not hmac.compare_digest(query["appkey"].encode(), appkey.encode()):
        raise AuthError(IVH_UNAUTHORISED, "unknown appkey")
    _check_timestamp(query["timestamp"], now=now, window=window)
    expected = ivh_signature(query, access_token)
    if not hmac.compare_digest(expected.encode(), query["signature"].encode()):
        raise AuthError(IVH_UNAUTHORISED, "signature mismatch")


def _check_timestamp(raw: str, *, now: float, window: float) -> None:
    # A.2: Unix seconds, within ±5 minutes of server time.
    if not raw.isascii() or not raw.isdigit():
        raise AuthError(IVH_UNAUTHORISED, "timestamp must be Unix seconds")
    if abs(now - int(raw)) > window:
        raise AuthError(IVH_UNAUTHORISED, f"timestamp outside the ±{window:g} s window")


def decode_usersig(usersig: str) -> dict[str, Any]:
    """B.2 steps 4-6 reversed: Tencent base64 -> zlib -> JSON object; AuthError(70003) if not."""
    try:
        if _PLAIN_B64.intersection(usersig):  # B.2 step 6 turns these into `*-_`
            raise ValueError("UserSig is plain base64, not Tencent's variant")
        packed = base64.b64decode(usersig.translate(_TENCENT_B64), validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, _MAX_USERSIG_JSON)
        if inflater.unconsumed_tail or not inflater.eof:
            raise ValueError("UserSig is truncated or too large")
        fields = json.loads(raw)
    except (binascii.Error, zlib.error, ValueError) as exc:
        raise AuthError(USERSIG_UNPARSABLE, "UserSig could not be parsed") from exc
    if not isinstance(fields, dict) or not _well_typed(fields):
        raise AuthError(USERSIG_UNPARSABLE, "UserSig fields are missing or mistyped")
    if fields["TLS.ver"] != "2.0":  # B.2: TLSSigAPIv2 writes "2.0"
        raise AuthError(USERSIG_UNPARSABLE, "UserSig version is not 2.0")
    return fields


def _well_typed(fields: dict[str, Any]) -> bool:
    strings = ("TLS.ver", "TLS.identifier", "TLS.sig")
    integers = ("TLS.sdkappid", "TLS.time", "TLS.expire")
    return (
        all(isinstance(fields.get(name), str) for name in strings)
        and all(_is_int(fields.get(name)) for name in integers)
        and isinstance(fields.get("TLS.userbuf", ""), str)
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def usersig_content(fields: Mapping[str, Any]) -> str:
    """B.2 step 2: the four signed lines (plus the optional userbuf line), each ending in \\n."""
    content = (
        f"TLS.identifier:{fields['TLS.identifier']}\n"
        f"TLS.sdkappid:{fields['TLS.sdkappid']}\n"
        f"TLS.time:{fields['TLS.time']}\n"
        f"TLS.expire:{fields['TLS.expire']}\n"
    )
    if "TLS.userbuf" in fields:
        content += f"TLS.userbuf:{fields['TLS.userbuf']}\n"
    return content


def check_usersig(
    usersig: str, *, sdkappid: int, identifier: str, secret_key: str, now: float
) -> None:
    """Raise AuthError with the B.7 code unless the UserSig is valid for this admin right now."""
    issued, lifetime = _verified(usersig, sdkappid, identifier, secret_key)
    if issued + lifetime < now:
        raise AuthError(USERSIG_EXPIRED, "UserSig expired")


@functools.lru_cache(maxsize=64)
def _verified(usersig: str, sdkappid: int, identifier: str, secret_key: str) -> tuple[int, int]:
    """`TLS.time` and `TLS.expire` once the UserSig's SDKAppID, identifier and signature check
    out. A client sends the same UserSig for minutes, so the checks are kept per UserSig and
    key; AuthError is raised afresh every time (lru_cache keeps no exception). Expiry is checked
    per request."""
    fields = decode_usersig(usersig)
    if fields["TLS.sdkappid"] != sdkappid:
        raise AuthError(USERSIG_WRONG_SDKAPPID, "SDKAppID in the request differs from the UserSig")
    if fields["TLS.identifier"] != identifier:
        raise AuthError(USERSIG_WRONG_IDENTIFIER, "identifier in the request differs from UserSig")
    digest = hmac.new(secret_key.encode(), usersig_content(fields).encode(), hashlib.sha256)
    expected = base64.b64encode(digest.digest()).decode()
    if not hmac.compare_digest(expected.encode(), fields["TLS.sig"].encode()):
        raise AuthError(USERSIG_BAD_SIGNATURE, "UserSig verification failed")
    return fields["TLS.time"], fields["TLS.expire"]
