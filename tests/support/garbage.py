"""Reference cycles: what only the cycle collector frees, with a pause per collection."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """Collects, after the block, the objects made in it that only the cycle collector frees."""
    gc.collect()
    found: list[object] = []
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def named(objects: list[object], name: str) -> list[object]:
    """Those whose type, or whose own qualified name (a function's), ends with `name`."""
    return [
        o
        for o in objects
        if type(o).__qualname__.endswith(name) or str(getattr(o, "__qualname__", "")).endswith(name)
    ]
