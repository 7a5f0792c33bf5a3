"""Outside JSON nested deep enough to fail the parser leaves the finalizers of other garbage the
stack they need: the collector does not start while the parser is deep."""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

import pytest

from orchestrator_flows import untrusted
from tests.support.collector import watched_collections

DEEP = b"[" * 50_000 + b"]" * 50_000
DEEP_OBJECTS = b'{"a":' * 20_000 + b"1" + b"}" * 20_000


def test_the_harness_sees_a_collection_starve_inside_a_plain_deep_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What `untrusted.loads` prevents, shown with `json.loads` itself: without it, collections
    start with no stack to spare (and a finalizer run there fails, unraisable)."""
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with watched_collections() as seen, pytest.raises(RecursionError):
        json.loads(DEEP)
    assert seen.starved > 0


@pytest.mark.parametrize("document", [DEEP, DEEP.decode(), DEEP_OBJECTS])
def test_no_collection_starts_inside_a_deep_untrusted_parse(document: bytes | str) -> None:
    with watched_collections() as seen:
        with pytest.raises(RecursionError):
            untrusted.loads(document)
        [object() for _ in range(1_000)]  # the allocations after it start the pending collection
    assert seen.started > 0
    assert seen.starved == 0


def test_the_collector_is_left_as_it_was() -> None:
    assert gc.isenabled()
    assert untrusted.loads(b'{"a": [1, 2.5, "x"]}', parse_float=str) == {"a": [1, "2.5", "x"]}
    assert gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(RecursionError):
            untrusted.loads(DEEP)
        assert not gc.isenabled()
    finally:
        gc.enable()
