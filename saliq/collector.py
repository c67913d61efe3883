"""Python's cyclic garbage collector paused while a large sweep is read and written.

Reading 10,000 trial records and writing their frontier builds millions of small dicts,
strings and floats that live until the export ends. The collector runs each time
allocations outpace frees by its threshold and walks the objects still alive: 2 to 3 s of
an 11-s export of 10,000 trials here. Those objects form no cycles (reference counting frees
them), so the collector waits until they are built; it runs again as usual afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused"]


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside (nested: the outermost resumes it)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
