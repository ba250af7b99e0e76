"""UserSig (docs/protocol.md B.2): independent decoding, the official library, the renewing
cache."""

from __future__ import annotations

import types

import pytest
import TLSSigAPIv2

from bridge.tencent.usersig import UserSigCache, gen_usersig
from tests.support.clock import FakeClock
from tests.unit.tencent.tencent_fakes import SECRET_KEY, decode_usersig, expected_tls_sig

NOW = 1_700_000_000


def test_usersig_decodes_to_the_documented_fields() -> None:
    usersig = gen_usersig(
        sdkappid=1400000000, identifier="xiaojun", secret_key=SECRET_KEY, expire=86400, now=NOW
    )
    assert set(usersig) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*-_")
    document = decode_usersig(usersig)
    assert document == {
        "TLS.ver": "2.0",
        "TLS.identifier": "xiaojun",
        "TLS.sdkappid": 1400000000,
        "TLS.expire": 86400,
        "TLS.time": NOW,
        "TLS.sig": expected_tls_sig(document, SECRET_KEY),
    }


def test_usersig_matches_the_official_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TLSSigAPIv2, "time", types.SimpleNamespace(time=lambda: NOW + 0.7))
    official = TLSSigAPIv2.TLSSigAPIv2(1400000000, SECRET_KEY).gen_sig("xiaojun", 86400)
    ours = gen_usersig(
        sdkappid=1400000000, identifier="xiaojun", secret_key=SECRET_KEY, expire=86400, now=NOW
    )
    assert decode_usersig(official) == decode_usersig(ours)
    assert decode_usersig(official)["TLS.sig"] == expected_tls_sig(decode_usersig(ours), SECRET_KEY)
    assert ours == official  # same JSON layout and zlib level: byte-identical


def test_a_different_key_gives_a_different_sig() -> None:
    one = gen_usersig(sdkappid=1, identifier="a", secret_key="k1", expire=60, now=NOW)
    two = gen_usersig(sdkappid=1, identifier="a", secret_key="k2", expire=60, now=NOW)
    assert one != two


def _cache(clock: FakeClock, ttl: int = 1000) -> UserSigCache:
    return UserSigCache(
        sdkappid=1400000000, identifier="admin", secret_key=SECRET_KEY, ttl=ttl, clock=clock
    )


def test_cache_reuses_then_renews_before_expiry() -> None:
    clock = FakeClock(NOW)
    cache = _cache(clock)
    first = cache.get()
    clock.now = NOW + 899  # more than 10% of the TTL left
    assert cache.get() == first
    clock.now = NOW + 900  # 10% left: renew
    renewed = cache.get()
    assert renewed != first
    assert decode_usersig(renewed)["TLS.time"] == NOW + 900
    assert decode_usersig(renewed)["TLS.expire"] == 1000


def test_invalidate_forces_a_new_usersig() -> None:
    clock = FakeClock(NOW)
    cache = _cache(clock)
    first = cache.get()
    clock.now += 1
    cache.invalidate()
    assert cache.get() != first


def test_invalidate_with_a_stale_usersig_keeps_the_current_one() -> None:
    clock = FakeClock(NOW)
    cache = _cache(clock)
    first = cache.get()
    clock.now += 1
    cache.invalidate(first)
    second = cache.get()
    clock.now += 1
    cache.invalidate(first)  # a late 70001 for the old sig must not churn the new one
    assert cache.get() == second != first


def test_a_clock_going_backwards_regenerates() -> None:
    clock = FakeClock(NOW)
    cache = _cache(clock)
    first = cache.get()
    clock.now = NOW - 3600
    assert (
        decode_usersig(cache.get())["TLS.time"] == NOW - 3600 != decode_usersig(first)["TLS.time"]
    )


def test_cache_repr_hides_key_and_sig() -> None:
    cache = _cache(FakeClock(NOW))
    usersig = cache.get()
    assert SECRET_KEY not in repr(cache)
    assert usersig not in repr(cache)


@pytest.mark.parametrize(("ttl", "fraction"), [(0, 0.1), (10, 0.0), (10, 1.0)])
def test_cache_rejects_bad_settings(ttl: int, fraction: float) -> None:
    with pytest.raises(ValueError):
        UserSigCache(sdkappid=1, identifier="a", secret_key="k", ttl=ttl, renew_fraction=fraction)
