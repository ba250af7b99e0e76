"""The one rule for a fast path around a library: used only when its setting is on and the
library is at a release it was verified against; said once, at start."""

from __future__ import annotations

import logging
from collections.abc import Set


def verdict(
    log: logging.Logger,
    *,
    name: str,
    setting: bool,
    key: str,
    library: str,
    version: str,
    verified: Set[str],
) -> bool:
    """Whether to use the fast path `name` (`key` is its setting), logged on `log`."""
    if not setting:
        log.info("%s fast path off (%s = false): %s %s's own code", name, key, library, version)
        return False
    if version not in verified:
        log.warning(
            "%s fast path off: %s %s is not a release it was verified against (%s); "
            "using %s's own code",
            name,
            library,
            version,
            ", ".join(sorted(verified)),
            library,
        )
        return False
    log.info("%s fast path on (%s %s)", name, library, version)
    return True
