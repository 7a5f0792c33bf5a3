"""The records are the response models: what the API sends is exactly what its OpenAPI
documents, and what the store keeps always reads back."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from orchestrator_flows.errors import UnstorableStep
from orchestrator_flows.records import dump_json, load_step, to_json
from tests.support.scripted import STAGE_INTENTS, ScriptedAgents, body, input_required


def resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A schema with its $ref and its nullable anyOf unwrapped."""
    while True:
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        elif "anyOf" in schema:
            schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
        else:
            return schema


def undocumented(value: Any, schema: dict[str, Any], spec: dict[str, Any],
                 where: str = "") -> list[str]:
    """Every place where `value` and its schema disagree on the keys (objects whose schema
    names its properties) — in both directions."""
    schema = resolve(schema, spec)
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        documented = set(schema["properties"])
        found += [f"{where}.{key} sent, not documented" for key in set(value) - documented]
        found += [f"{where}.{key} documented, not sent" for key in documented - set(value)]
        for key in set(value) & documented:
            found += undocumented(value[key], schema["properties"][key], spec, f"{where}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            found += undocumented(item, schema["items"], spec, f"{where}[]")
    return found


def schema_of(spec: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    content = spec["paths"][path][method]["responses"]["200"]["content"]
    schema: dict[str, Any] = content["application/json"]["schema"]
    return schema


async def test_every_answer_is_exactly_what_the_openapi_documents(
    api: httpx.AsyncClient, agents: ScriptedAgents
) -> None:
    spec = (await api.get("/openapi.json")).json()
    agents.then("auth", input_required("auth-task"))
    answers = [(await api.post("/orchestrate", json=body(intent))).json()
               for intent in ("greeting", "verify_identity", *STAGE_INTENTS[1:])]
    assert answers[-1]["is_complete"]
    assert answers[1]["status"] == "input_required"
    for answer in answers:  # the last one carries the whole session as its summary
        assert undocumented(answer, schema_of(spec, "/orchestrate", "post"), spec) == []
    session = (await api.get("/session/CALL-1")).json()
    steps = (await api.get("/session/CALL-1/steps")).json()
    assert undocumented(session, schema_of(spec, "/session/{call_identify_id}", "get"),
                        spec) == []
    assert undocumented(steps, schema_of(spec, "/session/{call_identify_id}/steps", "get"),
                        spec) == []
    assert steps["steps"][0]["response_data"]["attempts"] == []  # documented, and sent


def test_the_schema_check_sees_a_field_the_schema_lacks() -> None:
    spec: dict[str, Any] = {"components": {"schemas": {}}}
    schema = {"properties": {"a": {"type": "object", "properties": {"b": {}}}}}
    assert undocumented({"a": {"b": 1, "c": 2}}, schema, spec) == [".a.c sent, not documented"]


def test_a_lone_surrogate_is_never_encoded() -> None:
    step = load_step(STORED)
    broken = type(step)(**{**{name: getattr(step, name) for name in step.__slots__},
                           "input_message": "hi \ud800"})
    with pytest.raises(UnstorableStep):
        dump_json(broken)


STORED = ('{"step_number":1,"intent_flow_id":1,"intent":"greeting","input_message":"hi",'
          '"agent":"greeting","a2a_agent_url":"http://a/","a2a_version":"1.0",'
          '"response_status":"success","response_data":{"agent":"greeting","text":"ok",'
          '"data":{"a":NaN,"b":-Infinity},"state":"completed","task_id":null,'
          '"context_id":null,"error":null,"latency_ms":1.5},"timestamp":"2026-11-25T00:00:00Z"}')


def test_a_step_stored_with_non_finite_numbers_or_without_attempts_reads_back() -> None:
    # As older versions wrote them: before non-finite numbers were refused, and before
    # `attempts` was recorded.
    step = load_step(STORED)
    sent = to_json(step)
    assert sent["response_data"]["data"] == {"a": None, "b": None}
    assert sent["response_data"]["attempts"] == []
    assert b"NaN" not in dump_json(step)
