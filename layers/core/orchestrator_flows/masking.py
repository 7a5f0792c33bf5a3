"""PII masking: what a caller said and what an agent answered is masked before it is stored,
logged or answered (the agent itself still receives the original text).

Rules, each replacing a match with a tag: card numbers (13–19 digits as cards are written — one
run, groups of four, 4-6-5 / 4-6-4, or single digits spoken one by one, with spaces or dashes —
and Luhn-valid), US SSNs, e-mail addresses, phone numbers (E.164, NANP and trunk-prefixed
national formats with separators), and OTP-like codes (a lone run of 4–8 digits) in the stages
the flow file names. Digits of any script count (`４１１１…`, `٤١١١…`).

Where a number sits decides what it is: a card or a code may follow `:` `#` `=` `.` `-` or
precede `/` `,` (`card:4111…`, `4111…/12/27`, `code:482913`), but digits that continue a
decimal, a date or a time (`3.14159`, `2026-11-25`, `10:30`) are not one, nor is an identifier
like `ORD-48291` or `order #48291`. A plain run of digits is never taken for a phone number:
order numbers and amounts look the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal

Rule = Literal["email", "card", "ssn", "phone"]
RULES: tuple[Rule, ...] = ("email", "card", "ssn", "phone")

_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
# Groups of digits joined by single spaces or dashes; cards are looked for inside each cluster.
_CLUSTER = re.compile(r"\d+(?:[ -]\d+)*")
_SSN = re.compile(r"(?<!\d)(?<!\d-)(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}"
                  r"(?![\d-])")
_PHONE = re.compile(
    r"(?<![\w+])\+[1-9](?:[ .-]?\d){7,14}(?!\d)"  # E.164, spaced or not
    r"|(?<![\w(])(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\d-])"  # NANP: (555) 123-4567
    r"|(?<![\w-])0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}(?![\d-])"  # trunk prefix: 020 7946 0958
)
_CODE = re.compile(r"(?<!\w)\d{4,8}(?!\w)")
# Words after which `#123456` or `X-123456` names a thing rather than a secret.
_IDENTIFIER_WORD = re.compile(
    r"\b(?:order|ticket|case|invoice|ref|reference|booking|confirmation|tracking|flight|room|"
    r"policy|claim|item|sku)(?:\s+(?:number|no\.?|num|id))?(?:\s+is|\s*:)?\s*#?\s*$",
    re.IGNORECASE)
_CODE_WORD = re.compile(r"(?:code|otp|pin|passcode|token|verification|verify)$", re.IGNORECASE)


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_layout(groups: list[str], separators: set[str]) -> bool:
    """Whether digit groups are written the way cards are written."""
    sizes = [len(g) for g in groups]
    if len(sizes) == 1:
        return True
    if len(separators) != 1:
        return False
    if all(size == 1 for size in sizes):
        return separators == {" "}  # spoken one digit at a time
    if sizes[:-1] == [4] * (len(sizes) - 1) and 1 <= sizes[-1] <= 4:
        return True
    return sizes in ([4, 6, 4], [4, 6, 5])


def _joined(text: str, start: int, end: int, before: str, after: str) -> bool:
    """Whether the digits at text[start:end] continue a number: a digit and one of `before`
    right before them, or one of `after` and a digit right after (`3.14159`, `11/25/2026`)."""
    left, right = text[max(0, start - 2):start], text[end:end + 2]
    return ((len(left) == 2 and left[0].isdigit() and left[1] in before)
            or (len(right) == 2 and right[0] in after and right[1].isdigit()))


def _mask_cards(text: str) -> str:
    pieces: list[str] = []
    last = 0
    for cluster in _CLUSTER.finditer(text):
        parts = re.split(r"([ -])", cluster.group())
        groups, separators = parts[::2], parts[1::2]
        offsets = [cluster.start()]
        for group, separator in zip(groups, separators, strict=False):
            offsets.append(offsets[-1] + len(group) + len(separator))
        i = 0
        while i < len(groups):
            card_end = None
            digits = ""
            for j in range(i, len(groups)):
                digits += groups[j]
                if len(digits) > 19:
                    break
                if (len(digits) >= 13 and luhn_valid(digits)
                        and _card_layout(groups[i:j + 1], set(separators[i:j]))):
                    card_end = j
            start = offsets[i]
            end = offsets[card_end] + len(groups[card_end]) if card_end is not None else 0
            # A `+` makes it a phone number; `1.4111…`, `10:4111…`, `4111….50` are not cards.
            if card_end is not None and not (text[start - 1:start] == "+"
                                             or _joined(text, start, end, ".,:/", ".,:")):
                pieces += [text[last:start], "[CARD]"]
                last = end
                i = card_end + 1
            else:
                i += 1
    pieces.append(text[last:])
    return "".join(pieces)


def _mask_code(match: re.Match[str]) -> str:
    text, start, end = match.string, match.start(), match.end()
    if _joined(text, start, end, ".,/:-", ".,/:-"):
        return match.group()  # a decimal, a date, a time: 3.14159, 2026-11-25, 1030:45
    word = re.search(r"(\w+)[-.]$", text[:start])
    if word is not None and not _CODE_WORD.search(word.group(1)):
        return match.group()  # an identifier: ORD-48291, v2.4829 (but code-482913 is a code)
    if _IDENTIFIER_WORD.search(text[max(0, start - 24):start]):
        return match.group()  # named as a thing: order #48291, invoice no. 48291
    return "[OTP]"


_SUBSTITUTIONS: dict[Rule, Callable[[str], str]] = {
    "email": lambda text: _EMAIL.sub("[EMAIL]", text),
    "card": _mask_cards,
    "ssn": lambda text: _SSN.sub("[SSN]", text),
    "phone": lambda text: _PHONE.sub("[PHONE]", text),
}


@dataclass(frozen=True)
class Masker:
    """The masking rules in force: which kinds, and the stages (by name) where OTPs are masked."""

    rules: tuple[Rule, ...] = RULES
    otp_stages: frozenset[str] = frozenset({"AUTHENTICATION"})

    def mask(self, text: str, stage: str) -> str:
        if not any(char.isdigit() or char == "@" for char in text):
            return text  # every rule needs a digit, or an @
        for rule in RULES:  # in this order: an e-mail's digits are never a phone
            if rule in self.rules:
                text = _SUBSTITUTIONS[rule](text)
        if stage in self.otp_stages:
            text = _CODE.sub(_mask_code, text)
        return text

    def mask_value(self, value: Any, stage: str) -> Any:
        """Any JSON value an agent sent, masked: every string, every key, and numbers that are
        a card (Luhn-valid, 13–19 digits) or, where codes are masked, a 4–8 digit code."""
        if isinstance(value, str):
            return self.mask(value, stage)
        if isinstance(value, dict):
            return {self.mask(str(key), stage): self.mask_value(item, stage)
                    for key, item in value.items()}
        if isinstance(value, list):
            return [self.mask_value(item, stage) for item in value]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value
        if isinstance(value, float) and not value.is_integer():
            return value
        digits = str(abs(int(value)))
        if "card" in self.rules and 13 <= len(digits) <= 19 and luhn_valid(digits):
            return "[CARD]"
        if stage in self.otp_stages and 4 <= len(digits) <= 8:
            return "[OTP]"
        return value

    @classmethod
    def of(cls, rules: Collection[Rule], otp_stages: Collection[str]) -> Masker:
        return cls(tuple(rule for rule in RULES if rule in rules), frozenset(otp_stages))
