"""Tamper evidence: each archived step carries `hash = SHA-256(previous hash + canonical step)`,
the first step's previous hash being the call's own genesis, and the call item holds the head.
Changing, removing or reordering a step breaks every link from it on; `verify` finds the first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass


def genesis(call_identify_id: str) -> str:
    """Where a call's chain starts: bound to the call, so a chain cannot be moved to another."""
    return hashlib.sha256(f"orchestrator-flows call {call_identify_id}".encode()).hexdigest()


def canonical(step_json: str | bytes) -> str:
    """A step as the chain hashes it: its JSON with sorted keys, no spaces, non-ASCII as is.
    The same step gives the same text whatever wrote its JSON."""
    return json.dumps(json.loads(step_json), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)


def link(previous: str, canonical_step: str) -> str:
    return hashlib.sha256((previous + canonical_step).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Link:
    """One archived step as the chain sees it."""

    number: int
    step: str  # canonical JSON
    hash: str


def chained(call_identify_id: str, steps: Sequence[str], start: int = 1,
            previous: str | None = None) -> list[Link]:
    """The links of `steps` (canonical JSON) numbered from `start`, after `previous` (the hash
    of step `start - 1`; the genesis for the first step)."""
    head = genesis(call_identify_id) if previous is None else previous
    links = []
    for number, step in enumerate(steps, start):
        head = link(head, step)
        links.append(Link(number, step, head))
    return links


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `verify` found: whether the chain holds, and the first step it does not hold at."""

    call_identify_id: str
    steps: int
    ok: bool
    broken_at: int | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"call {self.call_identify_id}: {self.steps} steps, the chain holds"
        return (f"call {self.call_identify_id}: the chain breaks at step {self.broken_at}: "
                f"{self.reason}")


def verify(call_identify_id: str, links: Sequence[Link], head: str, step_count: int) -> Verdict:
    """Recompute the chain of an archived call from its first step and compare each link, then
    the call item's head and step count."""
    previous = genesis(call_identify_id)
    for expected, found in enumerate(links, 1):
        if found.number != expected:
            return Verdict(call_identify_id, len(links), False, expected,
                           f"step {expected} is missing")
        try:
            recomputed = link(previous, canonical(found.step))
        except ValueError:
            return Verdict(call_identify_id, len(links), False, expected, "not JSON")
        if recomputed != found.hash:
            return Verdict(call_identify_id, len(links), False, expected,
                           "its content does not match its hash")
        previous = found.hash
    if len(links) != step_count:
        return Verdict(call_identify_id, len(links), False, len(links) + 1,
                       f"the call item counts {step_count} steps, the archive holds "
                       f"{len(links)}")
    if previous != head and links:
        return Verdict(call_identify_id, len(links), False, len(links),
                       "the call item's head is not the last step's hash")
    return Verdict(call_identify_id, len(links), True)
