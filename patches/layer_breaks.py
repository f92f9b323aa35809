"""Layer breaks: a long forward lets its own thread run other work between two layers.

An eager walk calls `layer_done()` between its transformer layers and between each layer's
attention and feed-forward halves. Outside a `between_layers` block that does nothing; inside
one, it runs the block's callback on the same thread (which may run a whole short forward of
its own: its layer breaks do not call back again). The server uses it so a quiet tenant's rows
need not wait out a flood's full forward (server/core/batcher.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_local = threading.local()


@contextmanager
def between_layers(callback: Callable[[], None]) -> Iterator[None]:
    """Within this block, every layer break of a walk on this thread calls `callback`."""
    previous = getattr(_local, "callback", None)
    _local.callback = callback
    try:
        yield
    finally:
        _local.callback = previous


def breaks_wanted() -> bool:
    """Whether a walk on this thread has a callback to run at its layer breaks."""
    return getattr(_local, "callback", None) is not None


def layer_done() -> None:
    """A walk finished a layer: run this thread's callback, if any (never re-entrantly)."""
    callback = getattr(_local, "callback", None)
    if callback is None:
        return
    _local.callback = None
    try:
        callback()
    finally:
        _local.callback = callback
