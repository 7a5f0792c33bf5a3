"""The stack's configuration: context values typed, validated, and refused with their key named."""

from __future__ import annotations

import pytest

from infra.config import ConfigError, StackConfig, flow_agents

AGENTS = flow_agents()


def test_the_shipped_flow_names_the_ten_agents() -> None:
    assert AGENTS == ["greeting", "auth", "refund", "billing", "booking", "complaint", "account",
                      "balance", "closing", "fallback"]


def test_cli_strings_are_coerced_to_their_types() -> None:
    config = StackConfig.from_mapping({
        "orchestrateMemoryMb": "1024", "isolated": "true", "jwtIssuer": "https://idp.example.com/",
        "jwtAudience": "a, b", "agentUrls": '{"auth": "https://auth.example.net/"}'})
    assert config.orchestrate_memory_mb == 1024
    assert config.isolated is True
    assert config.jwt_audience == ["a", "b"]
    assert config.agent_urls == {"auth": "https://auth.example.net/"}


def test_each_agent_gets_its_own_url_or_one_under_the_base() -> None:
    config = StackConfig.from_mapping({"agentBaseUrl": "https://agents.example.com/",
                                       "agentUrls": {"auth": "https://auth.example.net/a2a/"}})
    endpoints = config.agent_endpoints(AGENTS)
    assert endpoints["auth"] == "https://auth.example.net/a2a/"
    assert endpoints["refund"] == "https://agents.example.com/refund/"
    assert set(endpoints) == set(AGENTS)


def test_an_agent_without_a_url_fails_synth_naming_it() -> None:
    config = StackConfig.from_mapping({"agentUrls": {"auth": "https://auth.example.net/"}})
    with pytest.raises(ConfigError, match=r"no URL for agent\(s\) greeting, refund") as caught:
        config.agent_endpoints(AGENTS)
    assert "agentBaseUrl" in str(caught.value)


def test_a_url_for_an_agent_the_flow_does_not_have_is_refused() -> None:
    config = StackConfig.from_mapping({"agentBaseUrl": "https://agents.example.com",
                                       "agentUrls": {"pizza": "https://pizza.example.com/"}})
    with pytest.raises(ConfigError, match="agentUrls: pizza not agents of the flow"):
        config.agent_endpoints(AGENTS)


@pytest.mark.parametrize(("values", "message"), [
    ({"agentTimeoutSeconds": 26}, "leaves no room for Redis in API Gateway's 30 s"),
    ({"agentTimeoutSeconds": 20, "turnWaitSeconds": 5},
     "turnWaitSeconds=5 with agentTimeoutSeconds=20 would outlast API Gateway's 30 s: at most 4"),
    ({"turnWaitSeconds": -1}, "context turnWaitSeconds: "),
    ({"jwtIssuer": "https://idp.example.com/"}, "jwtIssuer needs jwtAudience"),
    ({"jwtAudience": "x"}, "jwtAudience needs jwtIssuer"),
    ({"jwtIssuer": "http://idp.example.com/", "jwtAudience": "x"}, "must be an https:// URL"),
    ({"logRetentionDays": 31}, "context logRetentionDays: .*one of CloudWatch's retentions"),
    ({"orchestrateMemoryMb": 64}, "context orchestrateMemoryMb: "),
    ({"stage": "Prod!"}, "context stage: "),
    ({"agentBaseUrl": "ftp://agents"}, "context agentBaseUrl: .*not an http"),
    ({"agentUrls": {"Auth": "https://a.example/"}}, "agent name 'Auth'"),
    ({"throttleRateLimit": 500}, "throttleBurstLimit must be at least throttleRateLimit"),
    ({"vpcId": "my-vpc"}, "context vpcId: "),
    ({"natGateway": 2}, "context natGateway: Extra inputs"),
])
def test_bad_values_are_refused_with_the_key_named(values: dict[str, object],
                                                   message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StackConfig.from_mapping(values)


def test_the_function_timeout_outlasts_the_agent_deadline_plus_redis() -> None:
    config = StackConfig.from_mapping({"agentTimeoutSeconds": 20})
    # The turn's wait takes what API Gateway's 30 s leave: 4 s, not 5.
    assert (config.turn_wait_seconds, config.function_timeout_seconds) == (4, 29)
    default = StackConfig.from_mapping({})
    assert (default.turn_wait_seconds, default.function_timeout_seconds) == (5, 25)
    off = StackConfig.from_mapping({"turnWaitSeconds": 0, "agentTimeoutSeconds": 24})
    assert (off.turn_wait_seconds, off.function_timeout_seconds) == (0, 29)


def test_context_is_read_from_a_node_by_key() -> None:
    class Node:
        def try_get_context(self, key: str) -> object:
            return {"stage": "qa", "readMemoryMb": "384", "unrelated": "x",
                    "alarmEmail": "qa@example.com"}.get(key)

    config = StackConfig.from_context(Node())
    assert (config.stage, config.read_memory_mb) == ("qa", 384)


def test_a_plain_http_agent_fails_synth_naming_it() -> None:
    config = StackConfig.from_mapping({"agentBaseUrl": "https://agents.example.com",
                                       "agentUrls": {"auth": "http://auth.internal/a2a/"}})
    with pytest.raises(ConfigError, match=r"agent auth \(http://auth.internal/a2a/\)") as caught:
        config.agent_endpoints(AGENTS)
    assert "allowHttpAgents" in str(caught.value)
    allowed = StackConfig.from_mapping({"agentBaseUrl": "http://agents.internal",
                                        "allowHttpAgents": "true"})
    assert allowed.agent_endpoints(AGENTS)["auth"] == "http://agents.internal/auth/"


def test_a_plain_http_token_endpoint_fails_synth_naming_its_agent() -> None:
    config = StackConfig.from_mapping({"agentBaseUrl": "https://agents.example.com", "agentAuth": {
        "refund": {"auth": {"type": "oauth2_client_credentials", "client_id": "of",
                            "token_url": "http://idp.internal/token",
                            "client_secret": "ssm:/of/refund-client"}}}})
    with pytest.raises(ConfigError, match="agent refund's token endpoint"):
        config.agent_endpoints(AGENTS)


@pytest.mark.parametrize(("auth", "message"), [
    ({"billing": {"auth": {"type": "bearer", "secret": "secretsmanager:of/billing"}}},
     "must be secretsmanager:<secret ARN>"),
    ({"billing": {"token": "x"}}, "billing: must be"),
    ({"pizza": {"auth": {"type": "bearer", "secret": "ssm:/p"}}}, "agentAuth: pizza not agents"),
])
def test_agent_credentials_name_their_secrets_by_arn(auth: dict[str, object],
                                                     message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StackConfig.from_mapping({"agentBaseUrl": "https://agents.example.com",
                                  "agentAuth": auth}).agent_endpoints(AGENTS)


def test_versioned_agents_need_no_url_of_their_own_and_must_be_https() -> None:
    versions = [{"name": "v1", "url": "https://b1.example.com/", "weight": 9},
                {"name": "v2", "url": "https://b2.example.com/", "weight": 1}]
    others = {name: f"https://agents.example.com/{name}/" for name in AGENTS if name != "billing"}
    config = StackConfig.from_mapping({"agentUrls": others,
                                       "agentVersions": {"billing": versions}})
    assert "billing" not in config.agent_endpoints(AGENTS)
    plain = StackConfig.from_mapping({"agentUrls": others, "agentVersions": {"billing": [
        *versions, {"name": "v3", "url": "http://b3.internal/", "weight": 1}]}})
    with pytest.raises(ConfigError, match=r"agent billing version v3 \(http://b3.internal/\)"):
        plain.agent_endpoints(AGENTS)
    with pytest.raises(ConfigError, match="no version has a weight above 0"):
        StackConfig.from_mapping({"agentVersions": {"billing": [
            {"name": "v1", "url": "https://b/", "weight": 0}]}})
