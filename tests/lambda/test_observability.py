"""What the functions tell CloudWatch: structured log lines and EMF metric blobs, captured from
the handlers' own output, with no caller or agent text in any of it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.events import load_event, turn_event

Invoke = Callable[[str, dict[str, Any]], dict[str, Any]]
SECRET = "my card is 4111 1111 1111 1111"


# Ids made at random for each invocation (Lambda request ids, context and message ids, X-Ray
# trace ids): hex that holds "4111" now and then (about one run in a few hundred), which is not
# the caller's card. They are taken out before looking for the card's digits.
# (Only ids of those shapes: a bare run of hex digits could be the card itself.)
RANDOM_IDS = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
                        r"|\b1-[0-9a-f]{8}-[0-9a-f]{24}\b")


def without_random_ids(out: str) -> str:
    return RANDOM_IDS.sub("<id>", out)


def emitted(capture: pytest.CaptureFixture[str]) -> tuple[list[dict[str, Any]], str]:
    """(EMF blobs, raw stdout) printed since the last call."""
    out = capture.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')], out


def metric(blobs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    found = []
    for blob in blobs:
        directive = blob["_aws"]["CloudWatchMetrics"][0]
        if any(m["Name"] == name for m in directive["Metrics"]):
            assert directive["Namespace"] == "OrchestratorFlows"
            assert blob["service"] == "orchestrator-flows"
            found.append(blob)
    return found


def turn(intent: str, call: str = "OBS-1", text: str = SECRET) -> dict[str, Any]:
    return {"call_identify_id": call, "account_id": "ACC-1", "eci": "ECI-1",
            "input_message": text, "intent": intent}


def test_a_turn_logs_structured_lines_with_call_intent_stage_and_request_id(
    warm: Invoke, log_lines: list[dict[str, Any]]
) -> None:
    warm("orchestrate", turn_event(turn("greeting"), request_id="req-obs-1"))
    (done,) = [line for line in log_lines if line["message"] == "turn handled"]
    assert done["correlation_id"] == "req-obs-1"
    assert (done["call_identify_id"], done["intent"], done["stage"], done["agent"]) == (
        "OBS-1", "greeting", 1, "greeting")
    assert done["function_name"] == "orchestrate"  # the Lambda context is injected
    assert done["level"] == "INFO"
    assert (done["status"], done["advanced"], done["input_length"]) == ("success", True,
                                                                        len(SECRET))


def test_no_caller_or_agent_text_reaches_the_output(
    warm: Invoke, capfd: pytest.CaptureFixture[str], log_lines: list[dict[str, Any]]
) -> None:
    capfd.readouterr()
    warm("orchestrate", turn_event(turn("greeting")))
    warm("orchestrate", turn_event(turn("verify_identity")))
    _, out = emitted(capfd)
    out += "\n".join(json.dumps(line) for line in log_lines)
    assert len(log_lines) >= 2
    assert "4111" not in without_random_ids(out)
    assert "one-time code" not in out  # what the auth agent said


def test_an_intent_that_holds_a_card_is_logged_masked(
    warm: Invoke, capfd: pytest.CaptureFixture[str], log_lines: list[dict[str, Any]]
) -> None:
    # An intent the flow does not know goes to the fallback agent, and is stored and logged.
    capfd.readouterr()
    warm("orchestrate", turn_event(turn("card:4111111111111111", call="OBS-CARD")))
    _, out = emitted(capfd)
    out += "\n".join(json.dumps(line) for line in log_lines)
    (done,) = [line for line in log_lines if line["message"] == "turn handled"]
    assert done["intent"] == "card:[CARD]"
    assert "4111" not in without_random_ids(out)


def test_step_metrics_are_emitted_in_emf(warm: Invoke, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    warm("orchestrate", turn_event(turn("greeting")))
    blobs, _ = emitted(capfd)
    (step,) = metric(blobs, "StepLatency")
    assert step["StepLatency"][0] > 0
    assert "StageAdvanced" in step
    (agent,) = metric(blobs, "AgentLatency")
    assert agent["agent"] == "greeting"
    assert ["agent", "service"] in [sorted(d) for d in
                                    agent["_aws"]["CloudWatchMetrics"][0]["Dimensions"]]


def test_calls_completed_is_counted_once_at_the_end(
    warm: Invoke, capfd: pytest.CaptureFixture[str]
) -> None:
    intents = ["greeting", "authenticate", "refund_request", "process_refund", "end_call"]
    texts = ["hi", "code 123456", "refund", "yes", "bye"]
    capfd.readouterr()
    for intent, text in zip(intents, texts, strict=True):
        warm("orchestrate", turn_event(turn(intent, "OBS-DONE", text)))
    blobs, _ = emitted(capfd)
    assert len(metric(blobs, "CallsCompleted")) == 1


def test_refused_turns_count_steps_rejected_per_code(
    warm: Invoke, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    warm("orchestrate", load_event("orchestrate", "wrong_stage"))
    warm("orchestrate", load_event("orchestrate", "missing_field"))
    blobs, _ = emitted(capfd)
    codes = sorted(b["code"] for b in metric(blobs, "StepsRejected"))
    assert codes == ["intent_not_allowed", "invalid_request"]


def test_agent_errors_are_counted_per_agent_and_kind(
    warm: Invoke, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.redis_servers import free_port

    monkeypatch.setenv("AGENT_URL_GREETING", f"http://127.0.0.1:{free_port()}/")
    capfd.readouterr()
    response = warm("orchestrate", turn_event(turn("greeting", "OBS-ERR")))
    blobs, _ = emitted(capfd)
    assert json.loads(response["body"])["status"] == "error"
    by_dimensions = {tuple(blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]): blob
                     for blob in metric(blobs, "AgentErrors")}
    assert set(by_dimensions) == {("service", "agent", "kind"), ("service",)}
    error = by_dimensions["service", "agent", "kind"]
    assert (error["agent"], error["kind"]) == ("greeting", "agent_unreachable")
    assert by_dimensions["service",]["AgentErrors"] == [1.0]  # the total the alarm watches
    # ... over every call: the error rate's denominator, on the same dimension
    (calls,) = metric(blobs, "AgentCalls")
    assert calls["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert calls["AgentCalls"] == [1.0]


def test_a_turn_that_does_not_advance_counts_no_stage_advanced(
    warm: Invoke, capfd: pytest.CaptureFixture[str]
) -> None:
    warm("orchestrate", turn_event(turn("greeting", "OBS-STAY")))
    capfd.readouterr()
    warm("orchestrate", turn_event(turn("small_talk", "OBS-STAY")))  # fallback: stays
    warm("orchestrate", turn_event(turn("verify_identity", "OBS-STAY", "it's me")))  # input
    blobs, _ = emitted(capfd)
    assert len(metric(blobs, "StepLatency")) == 2
    assert all("StageAdvanced" not in blob for blob in blobs)


def test_only_random_ids_are_taken_out_before_looking_for_a_card() -> None:
    line = ('"function_request_id": "0b1c2d3e-402b-8ecb-0411-1cdf1f72aa00", '
            '"trace": "1-6744e2a0-f18f39166f729d149aac3ac2", "intent": "card:4111111111111111"')
    assert "4111" in without_random_ids(line)  # the card stays, to be found
    assert "0411" not in without_random_ids(line)


def test_a_5xx_is_counted_for_the_version_that_answered_it(
    cold: Invoke, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.redis_servers import free_port

    capfd.readouterr()
    assert cold("get_session", load_event("get_session", "live"))["statusCode"] < 500
    blobs, _ = emitted(capfd)
    assert not metric(blobs, "ServerErrors")  # nothing below 500
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # no Redis there
    response = cold("get_session", load_event("get_session", "live"))
    assert response["statusCode"] == 503
    blobs, _ = emitted(capfd)
    (error,) = metric(blobs, "ServerErrors")
    assert error["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        ["service", "function", "version"]]
    assert (error["function"], error["version"]) == ("get_session", "$LATEST")
    assert error["ServerErrors"] == [1.0]
