"""A real-looking UserSig for the scanner's own tests (never a configured secret)."""

from __future__ import annotations

from bridge.tencent.usersig import gen_usersig


def a_usersig() -> str:
    """A UserSig made with a throwaway key."""
    return gen_usersig(
        sdkappid=1400000000, identifier="admin", secret_key="k" * 32, expire=60, now=0
    )
