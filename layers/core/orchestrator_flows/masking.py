"""PII masking: what a caller said and what an agent answered is masked before it is stored,
logged or answered (the agent itself still receives the original text).

Rules, each replacing a match with a tag: card numbers (13–19 digits as cards are written — one
run, groups of four, 4-6-5 / 4-6-4, or single digits spoken one by one, with spaces, dashes or
dots — and Luhn-valid), US SSNs, e-mail addresses, phone numbers (E.164, NANP and trunk-prefixed
national formats with separators), and OTP-like codes (4–8 digits, in one run or spoken in small
groups) in the stages the flow file names. Digits of any script count (`４１１１…`, `٤١١١…`).

Where a number sits decides what it is: a card or a code may follow `:` `#` `=` `.` `-` or
precede `/` `,` (`card:4111…`, `4111…/12/27`, `code:482913`), but digits that continue a
decimal, a date or a time (`3.14159`, `2026-11-25`, `10:30`) are not a code, nor is an amount
(`$1234`, `1234 dollars`), a year after a month (`November 25 2026`), an identifier like
`ORD-48291`, or a thing named before it (`order #48291`, `zip 94107`) unless a code was named
just before (`the code for your booking is 482913`). A plain run of digits is never taken for a
phone number: order numbers and amounts look the same.

Every rule runs in time linear in the text (an agent's text may be 1 MiB): patterns are bounded
and context is looked for in a short window before a match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal

Rule = Literal["email", "card", "ssn", "phone"]
RULES: tuple[Rule, ...] = ("email", "card", "ssn", "phone")

# RFC 5321's limits (64 for the local part, 63 a label) keep the scan linear.
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}[@＠][^\W_](?:[\w-]{0,61}[^\W_])?"
                    r"(?:\.[^\W_](?:[\w-]{0,61}[^\W_])?){1,8}")
# Groups of digits joined by separators; cards are looked for inside each cluster.
# (The longer alternative first, so that splitting a cluster finds what matching found.)
_SEPARATOR = r"(?:\s?[-.,/_\u2013\u2014]\s?|\s{1,3})"
_CLUSTER = re.compile(rf"\d+(?:{_SEPARATOR}\d+)*")
_SPLIT = re.compile(f"({_SEPARATOR})")
_SSN = re.compile(r"(?<!\d)(?<!\d[-.])(?!000|666|9\d\d)\d{3}([- .])(?!00)\d{2}\1(?!0000)\d{4}"
                  r"(?![\d-])")
_SSN_BARE = re.compile(r"(?<!\w)\d{9}(?!\w)")
_SSN_NAME = r"(?:\bssn|\bsocial(?:\s+security)?(?:\s+(?:number|no\.?|num|#))?)"
_SSN_WORD = re.compile(rf"(?i){_SSN_NAME}(?:\s*(?:is|was|:|=|#)\s*|\W){{0,6}}$")
_SSN_KEY = re.compile(rf"(?i)^{_SSN_NAME}\W*$|^social_security(?:_number)?$")
_PHONE = re.compile(
    # E.164, spaced or not, with an optional national (0): +49 (0)30 1234567
    r"(?<![\w+])\+\d(?:[ .-]?\d){0,2}[ .-]?(?:\(0\)[ .-]?)?(?:\d[ .-]?){6,12}\d(?!\d)"
    r"|(?<![\w(])(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\d-])"  # NANP: (555) 123-4567
    r"|(?<![\w-])0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}(?![\d-])"  # trunk prefix: 020 7946 0958
    r"|(?<![\w-])0\d(?:[ .]\d{2}){4}(?![\d-])"  # in pairs: 06 12 34 56 78
)
# A code: one run of 4–8 digits, or 2–8 groups of up to 4 digits spoken apart (482 913,
# 4 8 2 9 1 3), or 3-3 / 4-4 with a dash; or digits right after a word naming a code.
_CODE = re.compile(r"(?<!\w)(?:\d{1,4}(?:[ \t]\d{1,4}){1,7}|\d(?:-\d){3,7}|\d{3,4}-\d{3,4}"
                   r"|\d+)(?!\w)")
_CODE_GLUED = re.compile(r"(?i)(?<![^\W\d_])(?:code|otp|pin|passcode)_?(\d{4,8})(?!\w)")
_CODE_WORD = re.compile(r"(?i)\b(?:code|otp|pin|passcode|passcodes|token|verification|"
                        r"verify|one[- ]time)\b")
# Words after which `#123456` or `X-123456` names a thing rather than a secret.
_IDENTIFIER_WORD = re.compile(
    r"(?i)\b(?:order|ticket|case|invoice|ref|reference|booking|confirmation|tracking|flight|"
    r"room|policy|claim|item|sku|zip|postcode|postal\s+code|apartment|apt|suite|unit)"
    r"(?:\s+(?:number|no\.?|num|id|code))?(?:\s+is|\s*:)?\s*#?\s*$")
_PREFIX_WORD = re.compile(r"(\w+)[-.]$")
_CODE_PREFIX = re.compile(r"(?i)^(?:code|otp|pin|passcode|token|verification|verify|g)$")
_CURRENCY_BEFORE = re.compile(r"[$€£¥₹]\s?$|\b(?:USD|EUR|GBP|CAD|AUD)\s?$")
_AFTER_AMOUNT_OR_TIME = re.compile(
    r"(?i)\s?(?:dollars?|euros?|pounds?|usd|eur|gbp|cents?|bucks|hours?|hrs?|h\b|am\b|pm\b|"
    r"a\.m\.|p\.m\.|o'clock|minutes?|mins?|seconds?|secs?)")
_MONTH = r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
# Digits right after a month name are a day (and year): November 25 2026.
_AFTER_MONTH = re.compile(rf"(?i){_MONTH},?\s+$")
_YEAR_CONTEXT = re.compile(
    rf"(?i){_MONTH}(?:\s+\d{{1,2}}(?:st|nd|rd|th)?)?,?\s+$"
    r"|\b(?:in|since|from|until|till|year|of|by|before|after)\s+$")
_WINDOW = 32


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        total += _DOUBLED[value] if position & 1 else value
    return total % 10 == 0




def _card_at(sizes: list[int], separators: list[str], i: int, limit: int) -> int | None:
    """The last group (before `limit`) of the longest card layout that starts at group i, or
    None: one run of 13–19 digits, groups of four (the last of 1–4) or 4-6-4 / 4-6-5, their
    separators as they come, or single digits spoken apart by one kind of space. Luhn is the
    caller's to check."""
    if i >= limit:
        return None
    first = sizes[i]
    if first >= 13:
        return i if first <= 19 else None
    if first not in (1, 4) or i + 1 >= limit:
        return None
    separator = separators[i]
    if first == 1 and not separator.isspace():
        return None
    found, total = None, first
    for j in range(i + 1, min(limit, i + 19)):
        size = sizes[j]
        total += size
        if total > 19 or (first == 1 and separators[j - 1] != separator):
            break
        if first == 1:
            if size != 1:
                break
        elif j == i + 1 and size == 6:  # 4-6-4 or 4-6-5
            if j + 1 < limit and sizes[j + 1] in (4, 5):
                found = j + 1
            break
        elif size != 4:  # the last group of four-groups may be shorter, never longer
            if total >= 13 and size < 4:
                found = j
            break
        if total >= 13:
            found = j
    return found


def _without_split_tail(head: str) -> str:
    """`head` without the word a cut split, nor the digits and separators before that word (a
    card or a phone number written across words). A scan back from the end: a regex anchored
    at `$` would retry from every position, and cost the square of the length."""
    end = len(head)
    while end and not head[end - 1].isspace():
        end -= 1
    while end and (head[end - 1].isdigit() or not head[end - 1].isalnum()):
        end -= 1
    return head[:end]


def _continues_a_number(text: str, start: int, end: int, before: str, after: str) -> bool:
    """Whether the digits at text[start:end] continue a number: a digit and one of `before`
    right before them, or one of `after` and a digit right after (`3.14159`, `11/25/2026`)."""
    left, right = text[max(0, start - 2):start], text[end:end + 2]
    return ((len(left) == 2 and left[0].isdigit() and left[1] in before)
            or (len(right) == 2 and right[0] in after and right[1].isdigit()))


_HEX = frozenset("0123456789abcdefABCDEF")
_HEX_GLUE = 16  # how far a glued hex run is looked at: bounded, so masking stays linear


def _in_an_identifier(text: str, start: int, end: int) -> bool:
    """Whether the digits at text[start:end] are glued into a hex id rather than written as a
    number: a run of hex holding a digit right before or right after them. A UUID's groups line
    up as a Luhn-valid card one time in about 1,300 (`3fcf63f7-2087-4613-8623-6430eec5d46a`);
    `card4111…`, `cc4111…` and `4111…code` stay cards."""
    before, stop = start, max(0, start - _HEX_GLUE)  # a UUID's group is at most 12 long
    while before > stop and text[before - 1] in _HEX:
        before -= 1
    after, stop = end, min(len(text), end + _HEX_GLUE)
    while after < stop and text[after] in _HEX:
        after += 1
    return any(char.isdigit() for char in text[before:start] + text[end:after])


def _mask_cards(text: str) -> str:
    pieces: list[str] = []
    last = 0
    for cluster in _CLUSTER.finditer(text):
        if cluster.end() - cluster.start() < 13:
            continue  # too few digits for a card
        parts = _SPLIT.split(cluster.group())
        groups, separators = parts[::2], parts[1::2]
        sizes = [len(group) for group in groups]
        if sum(sizes) < 13:
            continue
        offsets = [cluster.start()]
        for size, separator in zip(sizes, separators, strict=False):
            offsets.append(offsets[-1] + size + len(separator))
        i = 0
        while i < len(groups):
            spoken = i
            while (spoken + 1 < len(groups) and sizes[spoken] == sizes[spoken + 1] == 1
                   and separators[spoken].isspace()):
                spoken += 1
            if spoken - i >= 19:
                # More digits spoken one by one than any card has: which of them are the
                # card cannot be told, so all of them are masked.
                pieces += [text[last:offsets[i]], "[CARD]"]
                last, i = offsets[spoken] + 1, spoken + 1
                continue
            end_group = _card_at(sizes, separators, i, len(groups))
            while end_group is not None and not luhn_valid("".join(groups[i:end_group + 1])):
                end_group = _card_at(sizes, separators, i, end_group)
            if end_group is None:
                i += 1
                continue
            start, end = offsets[i], offsets[end_group] + sizes[end_group]
            # `0.4111…` is a decimal's fraction; after `+`, up to 15 digits are a phone number
            # (E.164's most), left to that rule.
            if (_continues_a_number(text, start, end, ".", "")
                    or (text[start - 1:start] == "+" and sum(sizes[i:end_group + 1]) <= 15)
                    or _in_an_identifier(text, start, end)):
                i += 1
                continue
            pieces += [text[last:start], "[CARD]"]
            last, i = end, end_group + 1
    pieces.append(text[last:])
    return "".join(pieces)


def _mask_ssns(text: str) -> str:
    text = _SSN.sub("[SSN]", text)
    # Nine bare digits are an order number as often as not: an SSN only where one is named.
    return _SSN_BARE.sub(
        lambda m: "[SSN]" if _SSN_WORD.search(m.string, max(0, m.start() - _WINDOW),
                                              m.start()) else m.group(), text)


def _a_code(text: str, start: int, end: int) -> bool:
    """Whether the digits at text[start:end] (4–8 of them) are a code by where they sit."""
    if _continues_a_number(text, start, end, ".,/:-", ".,/:-"):
        return False  # a decimal, a date, a time: 3.14159, 2026-11-25, 1030:45
    window = text[max(0, start - _WINDOW):start]
    word = _PREFIX_WORD.search(window)
    if word is not None and not _CODE_PREFIX.match(word.group(1)):
        return False  # an identifier: ORD-48291, v2.4829 (but code-482913, G-482913 are codes)
    if text[end:end + 1] in ("-", ".") and text[end + 1:end + 2].isalnum():
        return False  # the head of an identifier: 48291-A, a UUID 12345678-fa53-…
    if _CURRENCY_BEFORE.search(window) or _AFTER_AMOUNT_OR_TIME.match(text, end):
        return False  # an amount or a time: $1234, 1234 dollars, 1030 hours
    if _AFTER_MONTH.search(window):
        return False  # a date: November 25 2026
    digits = text[start:end]
    if len(digits) == 4 and digits[:2] in ("19", "20") and _YEAR_CONTEXT.search(window):
        return False  # a year: November 25 2026, in 2026
    # Named as a thing (order #48291), unless a code was named just before.
    return not (_IDENTIFIER_WORD.search(window) and not _CODE_WORD.search(window))


def _mask_codes(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        run = match.group()
        digits = sum(char.isdigit() for char in run)
        if 4 <= digits <= 8 and _a_code(text, match.start(), match.end()):
            return "[OTP]"
        if " " not in run:
            return run
        # A run that is not one code as a whole: each of its groups may still be one.
        return re.sub(r"\d+", lambda g: "[OTP]" if 4 <= len(g.group()) <= 8 and _a_code(
            text, match.start() + g.start(), match.start() + g.end()) else g.group(), run)

    text = _CODE_GLUED.sub(lambda m: m.group()[:m.start(1) - m.start()] + "[OTP]", text)
    return _CODE.sub(replace, text)


_ASCII_DIGIT_OR_AT = re.compile(r"[0-9@]")
_NO_DIGITS = str.maketrans("", "", "0123456789")
# The fewest digits a card (13), an SSN (9) or a phone number (8: `+` and 7 digits, E.164's
# shortest this rule takes) can have.
FEWEST_DIGITS = 8
_SUBSTITUTIONS: dict[Rule, Callable[[str], str]] = {
    "email": lambda text: _EMAIL.sub("[EMAIL]", text) if "@" in text or "＠" in text else text,
    "card": _mask_cards,
    "ssn": _mask_ssns,
    "phone": lambda text: _PHONE.sub("[PHONE]", text),
}


@dataclass(frozen=True)
class Masker:
    """The masking rules in force: which kinds, and the stages (by name) where OTPs are masked."""

    rules: tuple[Rule, ...] = RULES
    otp_stages: frozenset[str] = frozenset({"AUTHENTICATION"})

    def mask(self, text: str, stage: str) -> str:
        # Every rule needs a digit, or an @: text with neither is left as it is (on ASCII text,
        # as most is, told by one regex search rather than a look at each character).
        if text.isascii():
            if _ASCII_DIGIT_OR_AT.search(text) is None:
                return text
            if "@" not in text and len(text) - len(text.translate(_NO_DIGITS)) < FEWEST_DIGITS:
                # Too few digits for a card, an SSN or a phone number: codes only, if any.
                return _mask_codes(text) if stage in self.otp_stages else text
        elif not any(char.isdigit() or char in "@＠" for char in text):
            return text
        for rule in RULES:  # in this order: an e-mail's digits are never a phone
            if rule in self.rules:
                text = _SUBSTITUTIONS[rule](text)
        if stage in self.otp_stages:
            text = _mask_codes(text)
        return text

    def mask_shortened(self, text: str, stage: str, limit: int) -> str:
        """`text` masked, and cut to about `limit` characters (then ending `…`). The cut comes
        first, so that masking costs what `limit` allows, and drops whatever the cut split —
        the last word, and digits and separators before it — so no half of a card, a phone
        number or an address is left where no rule would know it."""
        if len(text) <= limit:
            return self.mask(text, stage)
        return self.mask(_without_split_tail(text[:limit]), stage) + "…"

    def mask_value(self, value: Any, stage: str) -> Any:
        """Any JSON value an agent sent, masked: every string, every key (two keys masked
        alike are told apart, `[CARD]`, `[CARD]#2`), and numbers that are a card (Luhn-valid,
        13–19 digits) or, where codes are masked, a 4–8 digit code."""
        if isinstance(value, str):
            return self.mask(value, stage)
        if isinstance(value, dict):
            masked: dict[str, Any] = {}
            for key, item in value.items():
                name = base = self.mask(str(key), stage)
                count = 1
                while name in masked:
                    count += 1
                    name = f"{base}#{count}"
                named_ssn = ("ssn" in self.rules and _SSN_KEY.match(str(key))
                             and re.fullmatch(r"\d{3}[- .]?\d{2}[- .]?\d{4}", str(item)))
                masked[name] = "[SSN]" if named_ssn else self.mask_value(item, stage)
            return masked
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
