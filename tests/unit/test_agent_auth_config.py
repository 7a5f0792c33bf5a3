"""Agent credentials as configuration: the flow file's `auth` and `mtls` keys, what an agent
card's security schemes ask for, https only when deployed, and how long a credential is kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator_flows.a2a import security
from orchestrator_flows.a2a.credentials import AgentCredentials, CredentialsUnavailable
from orchestrator_flows.errors import FlowConfigError, SettingsError
from orchestrator_flows.flow import (
    Agent,
    ApiKeyAuth,
    BearerAuth,
    MutualTls,
    OAuth2ClientCredentials,
    SecretRef,
)
from orchestrator_flows.flow_file import parse_flow
from orchestrator_flows.settings import Settings

FLOW = """\
agents:
  hello: {{url: "{url}"{extra}}}
fallback_agent: hello
stages:
  - id: 1
    name: GREETING
    intents: {{hi: hello}}
"""


def flow_with(extra: str, url: str = "https://agents.example.com/hello") -> str:
    return FLOW.format(url=url, extra=extra)


@pytest.mark.parametrize(("extra", "expected"), [
    (', auth: {type: bearer, secret: "secretsmanager:of/token"}',
     BearerAuth(SecretRef("secretsmanager", "of/token"))),
    (', auth: {type: api_key, secret: "ssm:/of/key"}',
     ApiKeyAuth(SecretRef("ssm", "/of/key"), "X-API-Key")),
    (', auth: {type: api_key, header: X-Acme-Key, secret: "ssm:/of/key"}',
     ApiKeyAuth(SecretRef("ssm", "/of/key"), "X-Acme-Key")),
    (', auth: {type: oauth2_client_credentials, token_url: "https://idp.example.com/token", '
     'client_id: orchestrator, client_secret: "secretsmanager:arn:aws:secretsmanager:'
     'eu-west-1:123456789012:secret:of-oauth-AbCdEf", scopes: [a2a.invoke, read]}',
     OAuth2ClientCredentials(
         "https://idp.example.com/token", "orchestrator",
         SecretRef("secretsmanager",
                   "arn:aws:secretsmanager:eu-west-1:123456789012:secret:of-oauth-AbCdEf"),
         ("a2a.invoke", "read"))),
])
def test_each_kind_of_auth_loads_from_the_flow_file(extra: str, expected: Any) -> None:
    agent = parse_flow(flow_with(extra), "flow.yaml").agents["hello"]
    assert agent.auth == expected
    assert agent.mtls is None


def test_mutual_tls_loads_beside_a_header_auth() -> None:
    agent = parse_flow(flow_with(', auth: {type: bearer, secret: "ssm:/of/t"}, '
                                 'mtls: {secret: "secretsmanager:of/cert"}'),
                       "flow.yaml").agents["hello"]
    assert agent.mtls == MutualTls(SecretRef("secretsmanager", "of/cert"))
    assert agent.secrets() == (SecretRef("ssm", "/of/t"), SecretRef("secretsmanager", "of/cert"))


@pytest.mark.parametrize(("extra", "url", "problem"), [
    (", auth: {type: bearer}", None, "agents.hello.auth: bearer needs secret"),
    (', auth: {type: bearer, secret: "s3cret"}', None,
     "agents.hello.auth.secret: 's3cret' is not a secret reference"),
    (', auth: {type: bearer, secret: "ssm:/t", header: X-K}', None,
     "agents.hello.auth.header: not used by bearer"),
    (', auth: {type: oauth2_client_credentials, client_id: me, client_secret: "ssm:/c"}', None,
     "oauth2_client_credentials needs token_url"),
    (', auth: {type: oauth2_client_credentials, token_url: "ftp://idp/token", client_id: me, '
     'client_secret: "ssm:/c"}', None, "agents.hello.auth.token_url: 'ftp://idp/token' is not"),
    (', auth: {type: basic, secret: "ssm:/c"}', None, "agents.hello.auth.type"),
    (', auth: {type: api_key, header: "X Key", secret: "ssm:/c"}', None,
     "agents.hello.auth.header"),
    (', mtls: {secret: "secretsmanager:of/cert"}', "http://127.0.0.1:9001/",
     "a client certificate needs an https:// url"),
])
def test_a_broken_auth_is_named_at_its_line(extra: str, url: str | None, problem: str) -> None:
    text = flow_with(extra, url) if url else flow_with(extra)
    with pytest.raises(FlowConfigError) as error:
        parse_flow(text, "flow.yaml")
    assert str(error.value).startswith("flow.yaml:2: "), str(error.value)
    assert problem in str(error.value)


def settings_for(tmp_path: Path, text: str, **values: Any) -> Settings:
    path = tmp_path / "flow.yaml"
    path.write_text(text)
    return Settings(orchestrator_config=path, **values)


def test_deployed_settings_refuse_a_plain_http_agent_naming_it(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, flow_with("", "http://agents.internal:8080/hello"),
                            deployed=True)
    with pytest.raises(SettingsError, match=r"agent hello \(http://agents.internal:8080/hello\)"):
        settings.load_flow()


def test_deployed_settings_refuse_a_plain_http_token_endpoint(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, flow_with(
        ', auth: {type: oauth2_client_credentials, token_url: "http://idp.internal/token", '
        'client_id: me, client_secret: "ssm:/c"}'), deployed=True)
    with pytest.raises(SettingsError, match="agent hello's token endpoint"):
        settings.load_flow()


@pytest.mark.parametrize(("url", "deployed", "allowed"), [
    ("http://127.0.0.1:9101/", True, False),  # loopback: a local invoke of a handler
    ("http://localhost:9101/", True, False),
    ("http://agents.internal/", False, False),  # a local run may
    ("http://agents.internal/", True, True),  # AGENT_ALLOW_HTTP=true
    ("https://agents.internal/", True, False),
])
def test_what_may_be_called_over_plain_http(
    tmp_path: Path, url: str, deployed: bool, allowed: bool
) -> None:
    settings = settings_for(tmp_path, flow_with("", url), deployed=deployed,
                            agent_allow_http=allowed)
    assert settings.load_flow().agents["hello"].url == url


def test_agent_allow_http_is_read_from_the_environment() -> None:
    assert Settings.from_env({"AGENT_ALLOW_HTTP": "true"}).agent_allow_http
    assert not Settings.from_env({}).agent_allow_http
    assert Settings.from_env({"AGENT_SECRETS_MAX_AGE_SECONDS": "60"}
                             ).agent_secrets_max_age_seconds == 60


V1_CARD = {
    "securitySchemes": {
        "bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer"}},
        "key": {"apiKeySecurityScheme": {"location": "header", "name": "X-Acme-Key"}},
        "mtls": {"mtlsSecurityScheme": {}},
    },
    "securityRequirements": [{"schemes": {"bearer": {"list": []}, "mtls": {"list": []}}},
                             {"schemes": {"key": {"list": []}}}],
}
V03_CARD = {
    "securitySchemes": {"oauth": {"type": "oauth2", "flows": {"clientCredentials": {
        "tokenUrl": "https://idp/token", "scopes": {}}}}},
    "security": [{"oauth": ["a2a.invoke"]}],
}


def agent(**credentials: Any) -> Agent:
    return Agent("billing", "https://agents.example.com/billing", **credentials)


BEARER = BearerAuth(SecretRef("ssm", "/t"))
CERT = MutualTls(SecretRef("ssm", "/c"))


@pytest.mark.parametrize(("card", "credentials", "met"), [
    (V1_CARD, {}, False),
    (V1_CARD, {"auth": BEARER}, False),  # bearer alone: the first alternative also wants mTLS
    (V1_CARD, {"auth": BEARER, "mtls": CERT}, True),
    (V1_CARD, {"auth": ApiKeyAuth(SecretRef("ssm", "/k"), "x-acme-key")}, True),
    (V1_CARD, {"auth": ApiKeyAuth(SecretRef("ssm", "/k"), "X-Other")}, False),
    (V03_CARD, {"auth": OAuth2ClientCredentials("https://idp/token", "me",
                                                SecretRef("ssm", "/c"))}, True),
    (V03_CARD, {"auth": BEARER}, False),
    ({"securitySchemes": {"b": {"type": "http", "scheme": "bearer"}}}, {"auth": BEARER}, True),
    ({"name": "open"}, {}, True),
    ({**V03_CARD, "security": [{"oauth": ["a2a.invoke"]}, {}]}, {}, True),  # optional
    ("not a card", {}, True),
])
def test_a_card_security_is_met_by_the_configured_credentials(
    card: Any, credentials: dict[str, Any], met: bool
) -> None:
    assert (security.unmet(card, agent(**credentials)) is None) is met


def test_what_a_card_asks_for_is_said_by_name_and_kind() -> None:
    assert security.unmet(V1_CARD, agent()) == [
        {"bearer": "http:bearer", "mtls": "mtls"}, {"key": "apiKey:header:x-acme-key"}]


class FakeSecrets:
    max_age_seconds = 300.0

    def __init__(self, value: str) -> None:
        self.value = value
        self.reads: list[bool] = []

    def read(self, ref: SecretRef, *, fresh: bool) -> str:
        self.reads.append(fresh)
        return self.value


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def credentials(auth: Any, secrets: FakeSecrets, clock: Clock) -> AgentCredentials:
    return AgentCredentials(agent(auth=auth), secrets, clock=clock,
                            token_http=lambda: httpx.AsyncClient())


async def test_a_secret_is_kept_for_its_max_age_then_read_again() -> None:
    secrets, clock = FakeSecrets("tok"), Clock()
    kept = credentials(BEARER, secrets, clock)
    assert await kept.headers() == ((b"authorization", b"Bearer tok"),)
    clock.now += 299
    await kept.headers()
    assert secrets.reads == [False]
    clock.now += 2
    await kept.headers()
    assert secrets.reads == [False, False]


async def test_a_refused_value_is_read_afresh_once_for_all_who_were_refused() -> None:
    secrets, clock = FakeSecrets("old"), Clock()
    kept = credentials(BEARER, secrets, clock)
    refused = await kept.headers()
    secrets.value = "new"
    again = [await kept.headers(refused), await kept.headers(refused)]
    assert again == [((b"authorization", b"Bearer new"),)] * 2
    assert secrets.reads == [False, True]  # the second refused turn takes the first's read


@pytest.mark.parametrize("value", ["tok\r\nX-Admin: yes", "tökén", "   "])
async def test_a_secret_unusable_in_a_header_is_refused_unquoted(value: str) -> None:
    kept = credentials(BEARER, FakeSecrets(value), Clock())
    with pytest.raises(CredentialsUnavailable) as refused:
        await kept.headers()
    assert str(refused.value) == "ssm:/t is not usable in an HTTP header"


async def test_mutual_tls_material_that_is_not_a_certificate_says_so() -> None:
    kept = AgentCredentials(agent(mtls=CERT), FakeSecrets('{"certificate": "x"}'),
                            clock=Clock(), token_http=lambda: httpx.AsyncClient())
    with pytest.raises(CredentialsUnavailable, match="must hold JSON with certificate"):
        await kept.ssl_context()
    broken = AgentCredentials(
        agent(mtls=CERT), FakeSecrets('{"certificate": "x", "private_key": "y"}'),
        clock=Clock(), token_http=lambda: httpx.AsyncClient())
    with pytest.raises(CredentialsUnavailable, match="does not hold a usable certificate"):
        await broken.ssl_context()


def test_a_deployed_agents_credentials_come_from_agent_auth_variables() -> None:
    settings = Settings.from_env({"AGENT_AUTH_BILLING": json.dumps(
        {"auth": {"type": "api_key", "header": "X-Key", "secret": "ssm:/of/billing"}}),
        "AGENT_URL_BILLING": "https://billing.example.com/"})
    billing = settings.load_flow().agents["billing"]
    assert billing.auth == ApiKeyAuth(SecretRef("ssm", "/of/billing"), "X-Key")
    assert settings.load_flow().agents["refund"].auth is None


@pytest.mark.parametrize(("env", "problem"), [
    ({"AGENT_AUTH_BILLING": "{not json"}, "AGENT_AUTH_BILLING: not JSON"),
    ({"AGENT_AUTH_PIZZA": '{"auth": {"type": "bearer", "secret": "ssm:/p"}}'},
     "AGENT_AUTH_PIZZA: 'pizza' is not an agent of the flow"),
    ({"AGENT_AUTH_BILLING": '{"auth": {"type": "bearer"}}'},
     "AGENT_AUTH_BILLING: agents.billing.auth: bearer needs secret"),
    ({"AGENT_AUTH_BILLING": '{"token": "x"}'}, "AGENT_AUTH_BILLING: token: is not a known key"),
])
def test_a_broken_agent_auth_variable_is_named(env: dict[str, str], problem: str) -> None:
    with pytest.raises((SettingsError, FlowConfigError)) as error:
        Settings.from_env(env).load_flow()
    assert problem in str(error.value)


async def test_the_versions_of_an_agent_share_its_kept_credentials() -> None:
    from orchestrator_flows.a2a import A2AClient, AgentRequest
    from orchestrator_flows.flow import AgentVersion

    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            return httpx.Response(404)  # the agent card, read aside
        seen.append((str(request.url), request.headers["authorization"]))
        rpc_id = json.loads(request.content)["id"]
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": rpc_id, "result": {
            "message": {"role": "ROLE_AGENT", "parts": [{"text": "hi"}]}}})

    secrets = FakeSecrets("tok")
    client = A2AClient(timeout_seconds=5, transport=httpx.MockTransport(handler),
                       secrets=secrets)
    versioned = Agent("billing", "https://v1.example.com/", "1.0", auth=BEARER, versions=(
        AgentVersion("v1", "https://v1.example.com/", 1),
        AgentVersion("v2", "https://v2.example.com/", 1)))
    for version in ("v1", "v2", "v1", "v2"):
        await client.send(AgentRequest(agent=versioned.at(version), text="hello",
                                       metadata={}, context_id="ctx-1"))
    assert [url for url, _ in seen] == ["https://v1.example.com/", "https://v2.example.com/"] * 2
    assert {token for _, token in seen} == {"Bearer tok"}
    assert secrets.reads == [False]  # read once for both versions
