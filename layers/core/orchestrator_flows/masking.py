"""PII masking: what a caller said and what an agent answered is masked before it is stored or
logged (the agent itself still receives the original text).

Rules, each replacing a match with a tag: card numbers (13–19 digits as cards are written — one
run, groups of four, or 4-6-5 / 4-6-4, with spaces or dashes — and Luhn-valid), US SSNs, e-mail
addresses, phone numbers (E.164, NANP and trunk-prefixed national formats with separators), and
OTP-like codes (a lone run of 4–8 digits) in the stages the flow file names. A plain run of
digits is never taken for a phone number: order numbers and amounts look the same.
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
# As cards are written: one run of digits, groups of four, or Amex/Diners' 4-6-5 and 4-6-4, with
# one kind of separator; then the length (13-19) and Luhn decide. Loose digits with separators
# between them (an order number next to a date) are not joined into a card.
_CARD = re.compile(
    r"(?<![\d+.,/:-])(?:"
    r"\d{13,19}"
    r"|\d{4}(?P<s>[ -])\d{4}(?:(?P=s)\d{4}){1,2}(?:(?P=s)\d{1,4})?"
    r"|\d{4}(?P<t>[ -])\d{6}(?P=t)\d{4,5}"
    r")(?![\d]|[-/:.,]\d)")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])")
_PHONE = re.compile(
    r"(?<![\w+])\+[1-9](?:[ .-]?\d){7,14}(?!\d)"  # E.164, spaced or not
    r"|(?<![\w(])(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\d-])"  # NANP: (555) 123-4567
    r"|(?<![\w-])0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}(?![\d-])"  # trunk prefix: 020 7946 0958
)
# Not part of a date, a time, an amount or an identifier: 11/25/2026, 10:30, 1,234.56, ORD-1234.
_OTP = re.compile(r"(?<![\w.,/:-])\d{4,8}(?![\w/:-]|[.,]\d)")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group()


_SUBSTITUTIONS: dict[Rule, tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = {
    "email": (_EMAIL, "[EMAIL]"),
    "card": (_CARD, _mask_card),
    "ssn": (_SSN, "[SSN]"),
    "phone": (_PHONE, "[PHONE]"),
}


@dataclass(frozen=True)
class Masker:
    """The masking rules in force: which kinds, and the stages (by name) where OTPs are masked."""

    rules: tuple[Rule, ...] = RULES
    otp_stages: frozenset[str] = frozenset({"AUTHENTICATION"})

    def mask(self, text: str, stage: str) -> str:
        for rule in RULES:  # in this order: an e-mail's digits are never a phone
            if rule in self.rules:
                pattern, replacement = _SUBSTITUTIONS[rule]
                text = pattern.sub(replacement, text)
        if stage in self.otp_stages:
            text = _OTP.sub("[OTP]", text)
        return text

    def mask_data(self, value: Any, stage: str) -> Any:
        """Every string inside an agent's structured data, masked the same way."""
        if isinstance(value, str):
            return self.mask(value, stage)
        if isinstance(value, dict):
            return {key: self.mask_data(item, stage) for key, item in value.items()}
        if isinstance(value, list):
            return [self.mask_data(item, stage) for item in value]
        return value

    @classmethod
    def of(cls, rules: Collection[Rule], otp_stages: Collection[str]) -> Masker:
        return cls(tuple(rule for rule in RULES if rule in rules), frozenset(otp_stages))
