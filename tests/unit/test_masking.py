"""PII masking, property-based: every generated card, SSN, e-mail, phone and (in AUTHENTICATION)
OTP is masked wherever it sits in a sentence, and ordinary text — order numbers, dates, amounts,
times — comes out unchanged."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from uuid import UUID

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator_flows.api import create_app
from orchestrator_flows.errors import FlowConfigError
from orchestrator_flows.flow_file import parse_flow
from orchestrator_flows.masking import Masker, luhn_valid
from orchestrator_flows.runtime import Runtime, Storage
from orchestrator_flows.settings import Settings
from tests.support.scripted import ScriptedAgents, body, completed

MASKER = Masker()
CATALOGUE = yaml.safe_load((Path(__file__).parents[1] / "data" / "pii_catalogue.yaml")
                           .read_text(encoding="utf-8"))


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e["text"][:40])
def test_the_catalogue_of_utterances_is_masked_exactly_as_written(entry: dict[str, str]) -> None:
    stage = entry.get("stage", "INTENT_CAPTURE")
    assert MASKER.mask(entry["text"], stage) == entry.get("masked", entry["text"])


def test_the_catalogue_is_large_and_mixed() -> None:
    kept = [e for e in CATALOGUE if "masked" not in e]
    assert len(CATALOGUE) >= 60
    assert len(kept) >= 20  # ordinary text that must come out unchanged
    assert {"[CARD]", "[SSN]", "[EMAIL]", "[PHONE]", "[OTP]"} <= {
        tag for e in CATALOGUE for tag in re.findall(r"\[[A-Z]+\]", e.get("masked", ""))}
WORDS = st.lists(st.sampled_from(["please", "my", "is", "the", "thanks", "refund", "charge",
                                  "of", "on", "for", "account", "hello"]), max_size=5)
SEPARATORS = st.sampled_from(["", " ", "-"])


def sentence(draw: st.DrawFn, value: str) -> str:
    return " ".join([*draw(WORDS), value, *draw(WORDS)])


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    length = draw(st.integers(13, 19))
    body_digits = draw(st.lists(st.integers(0, 9), min_size=length - 1, max_size=length - 1))
    for check in range(10):
        digits = "".join(map(str, body_digits)) + str(check)
        if luhn_valid(digits):
            break
    separator = draw(SEPARATORS)
    layouts = [[4] * (length // 4) + ([length % 4] if length % 4 else [])]
    if length in (14, 15):  # Diners 4-6-4, Amex 4-6-5
        layouts.append([4, 6, length - 10])
    sizes = draw(st.sampled_from(layouts))
    groups, start = [], 0
    for size in sizes:
        groups.append(digits[start:start + size])
        start += size
    return separator.join(groups)


@st.composite
def in_a_sentence(
    draw: st.DrawFn, values: st.SearchStrategy[str],
    contexts: st.SearchStrategy[tuple[str, str]] | None = None,
) -> tuple[str, str]:
    value = draw(values)
    before, after = draw(contexts) if contexts is not None else ("", "")
    return value, sentence(draw, before + value + after)


# How people write around a card or a code in chat and forms; and digits of other scripts.
CARD_CONTEXTS = st.tuples(
    st.sampled_from(["", "card:", "CC:", "card#", "cc=", "no.", "-", "card -", "(", "'"]),
    st.sampled_from(["", ",", ".", "/12/27", "/1227", "!", ")", "'", ";"]))
CODE_CONTEXTS = st.tuples(
    st.sampled_from(["", "code:", "OTP=", "#", "code-", "otp.", "pin:", "(", "\""]),
    st.sampled_from(["", ",", ".", "/", "!", ")", "\"", "?"]))
SCRIPTS = st.sampled_from(["0123456789", "０１２３４５６７８９", "٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९"])


def written_in(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(values, SCRIPTS).map(
        lambda pair: pair[0].translate(str.maketrans("0123456789", pair[1])))


SSNS = st.builds(
    lambda area, group, serial, sep: f"{area:03d}{sep}{group:02d}{sep}{serial:04d}",
    st.integers(1, 899).filter(lambda n: n != 666), st.integers(1, 99), st.integers(1, 9999),
    st.sampled_from(["-", " "]))
EMAILS = st.from_regex(
    r"[a-z][a-z0-9._+-]{0,15}@[a-z]([a-z0-9-]{0,8}[a-z0-9])?\.(com|org|co\.uk|de)", fullmatch=True)
PHONES = st.one_of(
    st.builds(lambda cc, rest: f"+{cc}{rest}", st.integers(1, 99),
              st.from_regex(r"[0-9]{8,12}", fullmatch=True)),
    st.builds(lambda a, b, c: f"+1 {a} {b} {c}", st.integers(200, 999), st.integers(200, 999),
              st.integers(1000, 9999)),
    st.builds(lambda a, b, c, f: f.format(a, b, c), st.integers(200, 999),
              st.integers(200, 999), st.integers(1000, 9999),
              st.sampled_from(["({}) {}-{}", "{}-{}-{}", "{}.{}.{}"])),
    st.builds(lambda a, b, c: f"0{a} {b} {c}", st.integers(10, 99), st.integers(1000, 9999),
              st.integers(1000, 9999)),
)
# A year after "of" or "in" (both among WORDS) is a year by design, not a code: the catalogue
# holds those; drawn codes are never year-like, so that no draw depends on its neighbours.
OTPS = st.from_regex(r"[0-9]{4,8}", fullmatch=True).filter(
    lambda code: not (len(code) == 4 and code[:2] in ("19", "20")))


def digits_of(text: str) -> str:
    return re.sub(r"\D", "", text)


@given(in_a_sentence(written_in(card_numbers()), CARD_CONTEXTS))
def test_every_luhn_valid_card_number_is_masked(case: tuple[str, str]) -> None:
    card, text = case
    masked = MASKER.mask(text, "INTENT_CAPTURE")
    assert masked == text.replace(card, "[CARD]")


@given(st.from_regex(r"[0-9]{16}", fullmatch=True).filter(lambda d: not luhn_valid(d)))
def test_a_sixteen_digit_number_failing_luhn_is_not_a_card(number: str) -> None:
    assert MASKER.mask(f"reference {number}", "INTENT_CAPTURE") == f"reference {number}"


@given(in_a_sentence(SSNS))
def test_every_ssn_is_masked(case: tuple[str, str]) -> None:
    ssn, text = case
    masked = MASKER.mask(text, "FULFILLMENT")
    assert masked == text.replace(ssn, "[SSN]")


@given(in_a_sentence(EMAILS))
def test_every_email_address_is_masked(case: tuple[str, str]) -> None:
    email, text = case
    assert MASKER.mask(text, "GREETING") == text.replace(email, "[EMAIL]")


@given(in_a_sentence(PHONES))
def test_every_phone_number_is_masked(case: tuple[str, str]) -> None:
    phone, text = case
    assert MASKER.mask(text, "CLOSING") == text.replace(phone, "[PHONE]")


@given(in_a_sentence(written_in(OTPS), CODE_CONTEXTS))
def test_codes_are_masked_during_authentication_only(case: tuple[str, str]) -> None:
    code, text = case
    assert MASKER.mask(text, "AUTHENTICATION") == text.replace(code, "[OTP]")
    assert MASKER.mask(text, "INTENT_CAPTURE") == text


ORDINARY = st.one_of(
    # Up to 12 digits: a 13-19 digit Luhn-valid run is a card by design.
    st.builds(lambda n: f"order ORD-{n}", st.integers(0, 10**12 - 1)),
    st.builds(lambda n: f"order #{n}", st.integers(0, 10**12 - 1)),
    st.builds(lambda n: f"ticket {n}", st.integers(0, 10**9)),
    st.dates(date(1900, 1, 1), date(2100, 12, 31)).flatmap(lambda d: st.sampled_from([
        d.isoformat(), d.strftime("%m/%d/%Y"), d.strftime("%d.%m.%Y"), d.strftime("%d %b %Y"),
        f"{d.isoformat()}T10:30:00Z"])),
    st.builds(lambda units, cents: f"${units:,}.{cents:02d}", st.integers(0, 10**9),
              st.integers(0, 99)),
    st.builds(lambda units, cents: f"{units:,}.{cents:02d} EUR", st.integers(0, 10**9),
              st.integers(0, 99)),
    st.builds(lambda h, m: f"at {h}:{m:02d}", st.integers(0, 23), st.integers(0, 59)),
)


@given(st.lists(ORDINARY, min_size=1, max_size=4), WORDS)
def test_ordinary_text_is_left_alone(values: list[str], words: list[str]) -> None:
    text = " ".join([*words, *values])
    for stage in ("GREETING", "INTENT_CAPTURE", "FULFILLMENT", "CLOSING"):
        assert MASKER.mask(text, stage) == text


@given(st.dates(date(1900, 1, 1), date(2100, 12, 31)),
       st.builds(lambda units, cents: f"${units:,}.{cents:02d}", st.integers(0, 10**6),
                 st.integers(0, 99)))
def test_dates_and_amounts_survive_authentication_too(day: date, amount: str) -> None:
    text = f"paid {amount} on {day.isoformat()} and {day.strftime('%m/%d/%Y')}"
    assert MASKER.mask(text, "AUTHENTICATION") == text


def test_rules_and_otp_stages_come_from_the_flow_file() -> None:
    flow = parse_flow("""
agents: {a: {url: "http://127.0.0.1:9101/"}}
fallback_agent: a
stages:
  - {id: 1, name: GREETING, intents: {greeting: a}}
  - {id: 2, name: VERIFY, intents: {verify: a}}
masking: {rules: [email], otp_stages: [VERIFY]}
""", source="mask.yaml")
    assert flow.masker.mask("sam@example.com code 482913", "VERIFY") == "[EMAIL] code [OTP]"
    assert flow.masker.mask("sam@example.com, card 4111111111111111, code 482913",
                            "GREETING") == "[EMAIL], card 4111111111111111, code 482913"


def test_an_otp_stage_the_flow_does_not_have_is_refused() -> None:
    with pytest.raises(FlowConfigError, match=r"mask.yaml:6: .*'VERIFY' is not a stage"):
        parse_flow("""
agents: {a: {url: "http://127.0.0.1:9101/"}}
fallback_agent: a
stages:
  - {id: 1, name: GREETING, intents: {greeting: a}}
masking: {otp_stages: [VERIFY]}
""", source="mask.yaml")


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(card_numbers())
async def test_what_is_stored_and_answered_is_masked_but_the_agent_got_the_original(
    card: str,
) -> None:
    agents = ScriptedAgents().then("greeting", completed(f"I noted {card}, write to a@b.io"))
    runtime = Runtime.build(Settings(), storage=Storage.embedded(), agents=agents)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        answer = (await api.post("/orchestrate", json=body(
            "greeting", text=f"my card is {card}"))).json()
        steps = (await api.get("/session/CALL-1/steps")).json()["steps"]
    assert agents.requests[0].text == f"my card is {card}"
    assert steps[0]["input_message"] == "my card is [CARD]"
    assert steps[0]["response_data"]["text"] == "I noted [CARD], write to [EMAIL]"
    assert answer["response"]["text"] == "I noted [CARD], write to [EMAIL]"


def test_a_shortened_text_keeps_no_half_of_what_the_cut_split() -> None:
    # The cut would fall inside the card (and then inside an address): neither half is kept.
    for secret in ("4111 1111 1111 1111", "sam.rivera@example.com", "(212) 555-0147"):
        text = "y" * 80 + " my number is " + secret + " thanks"
        for limit in range(85, len(text)):
            shortened = MASKER.mask_shortened(text, "INTENT_CAPTURE", limit)
            assert shortened.endswith("…")
            assert len(shortened) <= limit + 1
            kept = shortened.removesuffix("…")
            assert not re.search(r"\d{3}|@", kept), (limit, shortened)
    assert MASKER.mask_shortened("card 4111111111111111", "GREETING", 100) == "card [CARD]"


def test_keys_that_mask_alike_are_kept_apart() -> None:
    masked = MASKER.mask_value({"4111111111111111": 1, "5500005555555559": 2, "x": 3},
                               "INTENT_CAPTURE")
    assert masked == {"[CARD]": 1, "[CARD]#2": 2, "x": 3}


TOKENS = st.lists(st.one_of(
    st.from_regex(r"[0-9]{1,19}", fullmatch=True), card_numbers(),
    st.sampled_from([" ", "  ", "\t", "\n", "-", " - ", ",", "/", "_", ":", "#", "=", "@", "(",
                     ")", "$", "\u00a0", "\u2013", "＠", "code", "otp", "ssn", "x", "card"]),
    st.text(alphabet="0123456789٤４ -,/", max_size=12)), max_size=30).map("".join)


@settings(max_examples=300)
@given(TOKENS)
def test_masking_takes_any_text_and_leaves_no_run_of_digits_that_is_a_card(text: str) -> None:
    # (Without `.` and `+`: a decimal's fraction and a phone number's digits are left alone.)
    for stage in ("AUTHENTICATION", "INTENT_CAPTURE"):
        masked = MASKER.mask(text, stage)
        for run in re.findall(r"(?<!\d)\d{13,19}(?!\d)", masked):
            assert not luhn_valid(run), masked


def test_an_ssn_is_masked_where_its_key_names_it() -> None:
    assert MASKER.mask_value({"ssn": 123456789, "SSN": "123456789", "social_security": 1,
                              "order": 123456789}, "FULFILLMENT") == {
        "ssn": "[SSN]", "SSN": "[SSN]", "social_security": 1, "order": 123456789}


@settings(max_examples=2000)
@given(st.uuids(), st.sampled_from(["", "ctx-", "task-", "id "]),
       st.sampled_from(["AUTHENTICATION", "INTENT_CAPTURE"]))
def test_an_id_made_of_a_uuid_is_never_masked(uuid: UUID, prefix: str, stage: str) -> None:
    # The engine's own context ids are `ctx-<uuid4>`, and agents name tasks by UUID: one
    # masked would drop the open task (a masked id cannot be continued).
    text = f"{prefix}{uuid}"
    assert MASKER.mask(text, stage) == text


def _every_rule(masker: Masker, text: str, stage: str) -> str:
    """What the rules make of `text` applied one by one, with no shortcut."""
    from orchestrator_flows import masking

    for rule in masking.RULES:
        if rule in masker.rules:
            text = masking._SUBSTITUTIONS[rule](text)
    return masking._mask_codes(text) if stage in masker.otp_stages else text


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="0123456789 +-.()/abcSN:#", max_size=40)
       .filter(lambda t: sum(c.isdigit() for c in t) < 8),
       st.sampled_from(["GREETING", "AUTHENTICATION"]))
def test_text_with_too_few_digits_for_any_number_is_masked_as_the_rules_would(
    text: str, stage: str
) -> None:
    """Masking skips the card, SSN and phone rules when a text has fewer digits than the
    shortest of them: skipping must change nothing."""
    masker = Masker()
    assert masker.mask(text, stage) == _every_rule(masker, text, stage)


@pytest.mark.parametrize("text", ["call +1 234 5678 now", "+12345678", "my ssn 123456789"])
def test_the_shortest_numbers_the_rules_take_are_still_masked(text: str) -> None:
    masked = Masker().mask(text, "GREETING")
    assert masked != text
    assert masked == _every_rule(Masker(), text, "GREETING")
