"""Handing a call to a person: when a caller asks for one (an escalation intent, or a phrase in
their words), and the summary the person's queue receives."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator_flows.session import Handoff, HandoffReason, Session

DEFAULT_QUEUE = "default"
MAX_SUMMARY = 600  # characters of the handoff's summary
MAX_QUOTED = 200  # characters of the caller's last words in it
# How much of a message is looked at for phrases: a caller asks for a person in a sentence, and
# compatibility forms can grow a character eighteenfold (U+FDFA), so the work is bounded.
MAX_SCANNED = 4096
_NOT_A_WORD = re.compile(r"[^\w]+")
_MARKS = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")


def words(text: str) -> str:
    """Text as phrases are compared: compatibility forms unfolded (`𝐇` is `H`), case-folded,
    accents dropped (`está` is `esta`), punctuation as spaces, one space between words and one
    at each end."""
    text = text[:MAX_SCANNED]
    if not text.isascii():
        text = _MARKS.sub("", unicodedata.normalize("NFKD", unicodedata.normalize(
            "NFKD", text).casefold()))
    return f" {' '.join(_NOT_A_WORD.sub(' ', text.casefold()).split())} "


@dataclass(frozen=True)
class EscalationPolicy:
    """`intents`: intents that ask for a person at any stage. `phrases`: per locale, words
    that do the same when a caller says them (whole words, anywhere in the message). `queue`:
    where a handoff goes unless its stage or transition names another."""

    intents: frozenset[str] = frozenset({"escalate"})
    phrases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    queue: str = DEFAULT_QUEUE
    _compared: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compared = {words(phrase) for listed in self.phrases.values() for phrase in listed}
        # One pattern for every phrase (each with its spaces: whole words), searched once.
        listed = sorted(compared - {"  "})
        object.__setattr__(self, "_compared", re.compile("|".join(
            re.escape(phrase) for phrase in listed)) if listed else None)

    def asked_for(self, intent: str | None, message: str) -> bool:
        """The caller asks for a person: by intent, or in their words."""
        if intent is not None and intent in self.intents:
            return True
        if self._compared is None:
            return False
        return self._compared.search(words(message)) is not None


_REASONS: dict[HandoffReason, str] = {
    "caller_request": "the caller asked for a person",
    "max_attempts": "the attempts at the stage ran out",
    "max_visits": "the call came back to the stage too often",
    "flow": "the flow sends this outcome to a person",
}


def handoff(session: Session, reason: HandoffReason, queue: str, stage_name: str,
            completed: list[str], last_words: str, last_outcome: str | None,
            why: str | None = None) -> Handoff:
    """The handoff of a call at its current stage (`stage_name`), with a summary for the
    person taking it. Everything in it is masked already: `last_words` is the turn's masked
    input. `why` replaces the reason's own words."""
    quoted = last_words if len(last_words) <= MAX_QUOTED else last_words[:MAX_QUOTED] + "…"
    parts = [f"Escalated at {stage_name} after {session.step_count} step"
             f"{'' if session.step_count == 1 else 's'}: {why or _REASONS[reason]}."]
    attempts = session.attempts.get(session.current_flow_id, 0)
    if attempts:
        parts.append(f"Unsuccessful attempts at {stage_name}: {attempts}.")
    if last_outcome:
        parts.append(f"Last agent outcome: {last_outcome}.")
    parts.append(f"Completed: {', '.join(completed) if completed else 'none'}.")
    if quoted.strip():
        parts.append(f"Caller's last words: \"{quoted}\"")
    summary = " ".join(parts)
    if len(summary) > MAX_SUMMARY:
        summary = summary[:MAX_SUMMARY - 1] + "…"
    return Handoff(reason=reason, queue=queue, from_flow_id=session.current_flow_id,
                   summary=summary)
