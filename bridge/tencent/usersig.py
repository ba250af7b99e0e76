"""Desk admin UserSig (TLSSigAPIv2, docs/protocol.md B.2): generation and a renewing cache.

Neither the secret key nor a UserSig ever appears in a repr or a log line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import SecretStr

logger = logging.getLogger(__name__)

# Tencent's own URL-safe base64: not RFC 4648 base64url (docs/protocol.md B.2 step 6).
_TENCENT_B64 = str.maketrans({"+": "*", "/": "-", "=": "_"})


def gen_usersig(*, sdkappid: int, identifier: str, secret_key: str, expire: int, now: int) -> str:
    """A UserSig valid for `expire` seconds from `now`, byte-identical to TLSSigAPIv2's."""
    content = (
        f"TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\n"
        f"TLS.time:{now}\nTLS.expire:{expire}\n"
    )
    digest = hmac.new(secret_key.encode("utf-8"), content.encode("utf-8"), hashlib.sha256)
    document = {
        "TLS.ver": "2.0",
        "TLS.identifier": identifier,
        "TLS.sdkappid": sdkappid,
        "TLS.expire": expire,
        "TLS.time": now,
        "TLS.sig": base64.b64encode(digest.digest()).decode("ascii"),
    }
    # json.dumps defaults and key order as in the official library (docs/protocol.md B.2 steps 4-5).
    compressed = zlib.compress(json.dumps(document).encode("utf-8"))
    return base64.b64encode(compressed).decode("ascii").translate(_TENCENT_B64)


@dataclass(frozen=True, slots=True)
class _Issued:
    usersig: str = field(repr=False)
    issued_at: int
    renew_at: float


class UserSigCache:
    """The admin UserSig, generated on first use and renewed before it expires (docs/protocol.md
    B.2)."""

    def __init__(
        self,
        *,
        sdkappid: int,
        identifier: str,
        secret_key: SecretStr | str,
        ttl: int = 86400,
        renew_fraction: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl <= 0 or not 0 < renew_fraction < 1:
            raise ValueError("ttl must be positive and renew_fraction within (0, 1)")
        self._sdkappid = sdkappid
        self._identifier = identifier
        self._secret = SecretStr(secret_key) if isinstance(secret_key, str) else secret_key
        self._ttl = ttl
        self._margin = ttl * renew_fraction
        self._clock = clock
        self._issued: _Issued | None = None

    def get(self) -> str:
        """The cached UserSig, regenerated when less than `renew_fraction` of its TTL is left."""
        now = self._clock()
        issued = self._issued
        if issued is None or now >= issued.renew_at or now < issued.issued_at:
            issued = self._issue(int(now))
        return issued.usersig

    def invalidate(self, usersig: str | None = None) -> None:
        """Force a new UserSig on the next `get()`; with `usersig`, only if it is still current."""
        if usersig is None or (self._issued is not None and self._issued.usersig == usersig):
            self._issued = None

    def _issue(self, now: int) -> _Issued:
        usersig = gen_usersig(
            sdkappid=self._sdkappid,
            identifier=self._identifier,
            secret_key=self._secret.get_secret_value(),
            expire=self._ttl,
            now=now,
        )
        self._issued = _Issued(usersig, now, now + self._ttl - self._margin)
        logger.debug("generated a UserSig for %s valid %d s", self._identifier, self._ttl)
        return self._issued

    def __repr__(self) -> str:
        return f"UserSigCache(sdkappid={self._sdkappid}, identifier={self._identifier!r})"
