"""The flow as data: the default flow, routing, and validation of flow files with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator_flows.errors import FlowConfigError, IntentNotAllowed, SettingsError
from orchestrator_flows.flow_file import default_flow, load_flow, parse_flow
from orchestrator_flows.settings import Settings

VALID = """\
agents:
  hello: {url: "http://127.0.0.1:9001/"}
  help: {url: "http://127.0.0.1:9002/", a2a_version: "0.3"}
fallback_agent: help
stages:
  - id: 1
    name: GREETING
    intents: {hi: hello}
  - id: 2
    name: CLOSING
    intents: {bye: hello}
"""


def broken(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new)


def test_default_flow_has_the_five_stages_of_the_design() -> None:
    flow = default_flow()
    assert [(s.id, s.name) for s in flow.stages] == [
        (1, "GREETING"), (2, "AUTHENTICATION"), (3, "INTENT_CAPTURE"), (4, "FULFILLMENT"),
        (5, "CLOSING"),
    ]
    assert sorted(flow.agents) == sorted(
        ["greeting", "auth", "refund", "billing", "booking", "complaint", "account", "balance",
         "closing", "fallback"]
    )


@pytest.mark.parametrize(
    ("intent", "stage", "agent"),
    [("welcome", 1, "greeting"), ("otp_verify", 2, "auth"), ("balance_inquiry", 3, "balance"),
     ("pay_bill", 4, "billing"), ("feedback", 5, "closing")],
)
def test_default_flow_routes_each_intent_to_its_agent(intent: str, stage: int, agent: str) -> None:
    route = default_flow().route(intent, stage)
    assert (route.agent.name, route.stage.id, route.is_fallback) == (agent, stage, False)


def test_intent_of_another_stage_names_the_allowed_intents() -> None:
    with pytest.raises(IntentNotAllowed) as refused:
        default_flow().route("process_refund", 1)
    assert refused.value.details == {"current_flow_id": 1, "allowed_intents": ["greeting",
                                                                                 "welcome"]}


def test_unknown_intent_routes_to_the_fallback_agent() -> None:
    route = default_flow().route("order_pizza", 3)
    assert (route.agent.name, route.stage.id, route.is_fallback) == ("fallback", 3, True)


def test_a_valid_file_loads_with_its_pinned_versions(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(VALID)
    flow = load_flow(path)
    assert flow.agents["help"].a2a_version == "0.3"
    assert flow.agents["hello"].a2a_version is None
    assert flow.last_stage_id == 2


def test_json_flow_files_are_accepted() -> None:
    text = ('{"agents": {"a": {"url": "http://x/"}}, "fallback_agent": "a", "stages": '
            '[{"id": 1, "name": "ONLY", "intents": {"go": "a"}}]}')
    assert parse_flow(text, "flow.json").stages[0].intents == {"go": "a"}


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (broken("{hi: hello}", "{hi: nobody}"), 8, "unknown agent 'nobody'"),
        (broken("{bye: hello}", "{hi: hello}"), 11, "duplicate intent 'hi'"),
        (broken("{hi: hello}", "{hi: hello, hi: help}"), 8, "duplicate key 'hi'"),
        (broken("{bye: hello}", "{}"), 11, "has no intents"),
        (broken("id: 2", "id: 3"), 9, "stage ids must be 1, 2, 3"),
        (broken("id: 2", "id: two"), 9, "stages.1.id"),
        (broken("name: CLOSING", "name: closing"), 10, "stages.1.name"),
        (broken("fallback_agent: help", "fallback_agent: ghost"), 4, "not an agent"),
        (broken('"http://127.0.0.1:9002/"', '"ftp://x"'), 3, "not an http(s) URL"),
        (broken('a2a_version: "0.3"', 'a2a_version: "2.0"'), 3, "a2a_version"),
        (broken("stages:", "stagez:"), 5, "stagez"),
        (broken("  - id: 1", "  - id: 1\n  nonsense: [\n"), 7, "not valid YAML"),
        ("", 1, "empty"),
        ("stages: []\nagents: {a: {url: 'http://x/'}}\nfallback_agent: a\n", 1, "no stages"),
    ],
    ids=["unknown-agent", "duplicate-intent", "duplicate-key", "empty-stage", "id-gap",
         "id-not-int", "bad-stage-name", "bad-fallback", "bad-url", "bad-version",
         "unknown-field", "bad-yaml", "empty-file", "no-stages"],
)
def test_a_broken_flow_file_names_the_file_line_and_problem(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(text)
    with pytest.raises(FlowConfigError) as error:
        load_flow(path)
    message = str(error.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert problem in message


def test_a_missing_flow_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(FlowConfigError, match="cannot read flow file"):
        load_flow(tmp_path / "absent.yaml")


def test_agent_url_override_replaces_one_agent() -> None:
    settings = Settings.from_env({"AGENT_URL_AUTH": "https://auth.internal/a2a"})
    flow = settings.load_flow()
    assert flow.agents["auth"].url == "https://auth.internal/a2a"
    assert flow.agents["greeting"].url == default_flow().agents["greeting"].url


def test_agent_url_override_of_an_unknown_agent_is_refused() -> None:
    with pytest.raises(FlowConfigError, match="AGENT_URL_"):
        Settings.from_env({"AGENT_URL_NOBODY": "http://x/"}).load_flow()


def test_orchestrator_config_replaces_the_default_flow(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(VALID)
    flow = Settings.from_env({"ORCHESTRATOR_CONFIG": str(path)}).load_flow()
    assert [s.name for s in flow.stages] == ["GREETING", "CLOSING"]


@pytest.mark.parametrize(
    ("env", "variable"),
    [({"SESSION_TTL_SECONDS": "ten"}, "SESSION_TTL_SECONDS"),
     ({"AGENT_TIMEOUT_SECONDS": "0"}, "AGENT_TIMEOUT_SECONDS"),
     ({"REDIS_MODE": "sentinel"}, "REDIS_MODE"),
     ({"REDIS_URL": "http://cache"}, "REDIS_URL")],
)
def test_bad_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


def test_redis_url_is_required_where_the_caller_says_so() -> None:
    with pytest.raises(SettingsError, match="REDIS_URL is not set"):
        Settings.from_env({}, deployed=True)


def test_settings_defaults_follow_the_design() -> None:
    settings = Settings.from_env({})
    assert (settings.redis_url, settings.redis_mode, settings.session_ttl_seconds,
            settings.agent_timeout_seconds) == (None, "standalone", 3600, 15.0)
    assert settings.claim_lease_seconds > settings.agent_timeout_seconds


def test_every_problem_of_a_flow_file_is_reported_at_once_in_its_own_words(
    tmp_path: Path,
) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(broken("{hi: hello}", "{hi: nobody}").replace(
        "fallback_agent: help", "fallback_agent: ghost"))
    with pytest.raises(FlowConfigError) as error:
        load_flow(path)
    assert str(error.value).splitlines() == [
        f"{path}:4: fallback_agent 'ghost' is not an agent",
        f"{path}:8: intent 'hi' routes to unknown agent 'nobody'",
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("[1, 2]", "flow.yaml:1: the flow file: must be a mapping of keys"),
    ("agents: {a: 3}\nfallback_agent: a\nstages: []\n",
     "flow.yaml:1: agents.a: must be a mapping of keys"),
    ("agents: {}\nstages: []\n", "flow.yaml:1: fallback_agent: is required"),
])
def test_shape_problems_name_no_class_of_the_code(text: str, expected: str) -> None:
    with pytest.raises(FlowConfigError) as error:
        parse_flow(text, "flow.yaml")
    assert str(error.value).splitlines()[0] == expected
    assert "Spec" not in str(error.value)
