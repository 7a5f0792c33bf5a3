"""Watches where the cyclic collector starts: whether a finalizer run by that collection would
have the stack it needs. A collection that starts deep inside a recursive parse runs the
finalizers of pending garbage with no stack left (`orchestrator_flows.untrusted`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# About what a finalizer may need: a transport's close, a log record, a warning.
FINALIZER_FRAMES = 150


@dataclass
class Collections:
    started: int = 0
    starved: int = 0  # collections a finalizer needing FINALIZER_FRAMES could not run in


def _descend(levels: int) -> int:
    return _descend(levels - 1) + 1 if levels else 0


@contextmanager
def watched_collections(young_threshold: int = 50) -> Iterator[Collections]:
    """Collections inside the block, with the young generation collected every
    `young_threshold` allocations, so that any stretch of a parse sees several."""
    seen = Collections()

    def probe(phase: str, _: dict[str, int]) -> None:
        if phase != "start":
            return
        seen.started += 1
        try:
            _descend(FINALIZER_FRAMES)
        except RecursionError:
            seen.starved += 1

    thresholds = gc.get_threshold()
    gc.set_threshold(young_threshold, *thresholds[1:])
    gc.callbacks.append(probe)
    try:
        yield seen
    finally:
        gc.callbacks.remove(probe)
        gc.set_threshold(*thresholds)
