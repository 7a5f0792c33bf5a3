"""Agents that ask for credentials: real a2a-sdk agents behind a bearer / API-key check, a local
OAuth 2.0 token endpoint, mutual TLS with a throwaway CA; the credentials in moto's Secrets
Manager and SSM, read through Powertools' parameters utility."""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from orchestrator_flows.a2a import A2AClient, AgentRequest
from orchestrator_flows.a2a.credentials import PowertoolsSecrets
from orchestrator_flows.api import create_app
from orchestrator_flows.errors import AgentFailure, FailureCode
from orchestrator_flows.flow import (
    Agent,
    ApiKeyAuth,
    BearerAuth,
    MutualTls,
    OAuth2ClientCredentials,
    SecretRef,
)
from orchestrator_flows.local.serving import serving
from orchestrator_flows.runtime import Runtime
from orchestrator_flows.settings import Settings
from tests.support.agents import Recorder, build_agent_app
from tests.support.auth_agents import Gate, Pki, TokenEndpoint, make_pki
from tests.support.scripted import body

Serve = Callable[[Callable[[str], Any]], Any]
TOKEN = "s3cret-bearer-token-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """moto's Secrets Manager and SSM in this process; Powertools' caches emptied around."""
    from aws_lambda_powertools.utilities.parameters import base
    from moto import mock_aws

    for name, value in (("AWS_DEFAULT_REGION", "eu-west-1"), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_SESSION_TOKEN", "testing")):
        monkeypatch.setenv(name, value)
    base.DEFAULT_PROVIDERS.clear()  # type: ignore[attr-defined]
    base.clear_caches()  # type: ignore[no-untyped-call]
    with mock_aws():
        yield {"secrets": boto3.client("secretsmanager"), "ssm": boto3.client("ssm")}
    base.DEFAULT_PROVIDERS.clear()  # type: ignore[attr-defined]
    base.clear_caches()  # type: ignore[no-untyped-call]


class CountingSecrets(PowertoolsSecrets):
    """Powertools' reader, counting how often a secret is asked for (cache misses included)."""

    def __init__(self, max_age_seconds: float = 300) -> None:
        super().__init__(max_age_seconds)
        self.reads: list[tuple[str, bool]] = []

    def read(self, ref: SecretRef, *, fresh: bool) -> str:
        self.reads.append((str(ref), fresh))
        return super().read(ref, fresh=fresh)


def request(agent: Agent, text: str = "hello") -> AgentRequest:
    return AgentRequest(agent=agent, text=text, metadata={"call_identify_id": "CALL-1"},
                        context_id="ctx-call-1")


async def guarded_agent(serve: Serve, gate: Gate, name: str = "billing") -> str:
    url: str = await serve(lambda url: gate.guard(build_agent_app(name, url)))
    return url


async def test_a_bearer_token_from_secrets_manager_is_sent(serve: Serve, aws: Any) -> None:
    aws["secrets"].create_secret(Name="of/billing-token", SecretString=TOKEN)
    gate = Gate(accepted={f"Bearer {TOKEN}"})
    url = await guarded_agent(serve, gate)
    secrets = CountingSecrets()
    client = A2AClient(timeout_seconds=5, secrets=secrets)
    agent = Agent("billing", url, "1.0",
                  auth=BearerAuth(SecretRef("secretsmanager", "of/billing-token")))
    for _ in range(3):
        reply = await client.send(request(agent))
        assert reply.state == "completed"
    assert gate.seen == [f"Bearer {TOKEN}"] * 3
    assert secrets.reads == [("secretsmanager:of/billing-token", False)]  # kept: read once


async def test_an_api_key_from_ssm_goes_in_its_header(serve: Serve, aws: Any) -> None:
    aws["ssm"].put_parameter(Name="/of/booking-key", Value="key-42", Type="SecureString")
    gate = Gate(header="X-Booking-Key", accepted={"key-42"})
    url = await guarded_agent(serve, gate, "booking")
    agent = Agent("booking", url, "1.0",
                  auth=ApiKeyAuth(SecretRef("ssm", "/of/booking-key"), "X-Booking-Key"))
    reply = await A2AClient(timeout_seconds=5, secrets=PowertoolsSecrets()).send(request(agent))
    assert reply.state == "completed"
    assert gate.seen == ["key-42"]


async def test_a_rotated_secret_is_read_again_once_after_a_401(serve: Serve, aws: Any) -> None:
    aws["secrets"].create_secret(Name="of/billing-token", SecretString="old-token")
    gate = Gate(accepted={"Bearer old-token"})
    url = await guarded_agent(serve, gate)
    secrets = CountingSecrets()
    client = A2AClient(timeout_seconds=5, secrets=secrets)
    agent = Agent("billing", url, "1.0",
                  auth=BearerAuth(SecretRef("secretsmanager", "of/billing-token")))
    await client.send(request(agent))
    # Rotated: the agent now takes only the new token, still within the cache's age.
    aws["secrets"].put_secret_value(SecretId="of/billing-token", SecretString="new-token")
    gate.accepted = {"Bearer new-token"}
    reply = await client.send(request(agent))
    assert reply.state == "completed"
    assert gate.refusals == 1
    assert gate.seen == ["Bearer old-token", "Bearer old-token", "Bearer new-token"]
    assert secrets.reads == [("secretsmanager:of/billing-token", False),
                             ("secretsmanager:of/billing-token", True)]
    await client.send(request(agent))
    assert gate.refusals == 1
    assert len(secrets.reads) == 2  # the new one is kept


async def test_a_streaming_agent_gets_the_credentials_and_a_401_is_refreshed_once(
    serve: Serve, aws: Any
) -> None:
    aws["secrets"].create_secret(Name="of/billing-token", SecretString="old-token")
    gate = Gate(accepted={"Bearer old-token"})
    front: dict[str, Recorder] = {}

    def make(url: str) -> Recorder:
        front["r"] = Recorder(gate.guard(build_agent_app("billing", url, streaming=True)))
        return front["r"]

    url: str = await serve(make)
    secrets = CountingSecrets()
    client = A2AClient(timeout_seconds=5, secrets=secrets)
    agent = Agent("billing", url, auth=BearerAuth(SecretRef("secretsmanager",
                                                            "of/billing-token")))
    assert (await client.send(request(agent))).state == "completed"
    aws["secrets"].put_secret_value(SecretId="of/billing-token", SecretString="new-token")
    gate.accepted = {"Bearer new-token"}
    reply = await client.send(request(agent))
    assert reply.state == "completed"
    assert "bill" in reply.text
    assert [r["json"]["method"] for r in front["r"].requests] == ["SendStreamingMessage"] * 3
    assert gate.seen == ["Bearer old-token", "Bearer old-token", "Bearer new-token"]
    assert [fresh for _, fresh in secrets.reads] == [False, True]


async def test_a_wrong_secret_is_agent_auth_failed_after_one_fresh_read(
    serve: Serve, aws: Any
) -> None:
    aws["secrets"].create_secret(Name="of/billing-token", SecretString="wrong-value-123")
    gate = Gate(accepted={f"Bearer {TOKEN}"})
    url = await guarded_agent(serve, gate)
    agent = Agent("billing", url, "1.0",
                  auth=BearerAuth(SecretRef("secretsmanager", "of/billing-token")))
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=5, secrets=PowertoolsSecrets()).send(request(agent))
    assert failure.value.code is FailureCode.AUTH_FAILED
    assert failure.value.to_json()["http_status"] == 401
    assert gate.refusals == 2  # the first try, and the one after reading it afresh
    assert "wrong-value-123" not in json.dumps(failure.value.to_json())
    assert [a.outcome for a in failure.value.attempts] == ["agent_auth_failed"]  # not retried


async def test_a_secret_that_cannot_be_read_is_agent_auth_failed_naming_it(
    serve: Serve, aws: Any
) -> None:
    gate = Gate(accepted={f"Bearer {TOKEN}"})
    url = await guarded_agent(serve, gate)
    agent = Agent("billing", url, "1.0",
                  auth=BearerAuth(SecretRef("secretsmanager", "of/missing")))
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=5, secrets=PowertoolsSecrets()).send(request(agent))
    assert failure.value.code is FailureCode.AUTH_FAILED
    assert "secretsmanager:of/missing" in failure.value.message
    assert "ResourceNotFoundException" in failure.value.message
    assert gate.seen == []  # nothing was sent without its credentials


async def test_an_agent_asking_for_credentials_the_flow_lacks_is_auth_failed(
    serve: Serve,
) -> None:
    gate = Gate(accepted={f"Bearer {TOKEN}"})
    url = await guarded_agent(serve, gate)
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=5).send(request(Agent("billing", url, "1.0")))
    assert failure.value.code is FailureCode.AUTH_FAILED
    assert "does not configure" in failure.value.message


async def oauth_setup(serve: Serve, aws: Any, expires_in: int = 3600
                      ) -> tuple[Gate, TokenEndpoint, Agent]:
    aws["secrets"].create_secret(Name="of/refund-oauth", SecretString="client-s3cret")
    gate = Gate()
    endpoint = TokenEndpoint("orchestrator", "client-s3cret", gate, expires_in=expires_in)
    token_base = await serve(lambda _: endpoint.app())
    url = await guarded_agent(serve, gate, "refund")
    agent = Agent("refund", url, "1.0", auth=OAuth2ClientCredentials(
        token_base + "token", "orchestrator",
        SecretRef("secretsmanager", "of/refund-oauth"), ("a2a.invoke",)))
    return gate, endpoint, agent


async def test_an_oauth2_token_is_fetched_once_and_reused(serve: Serve, aws: Any) -> None:
    gate, endpoint, agent = await oauth_setup(serve, aws)
    client = A2AClient(timeout_seconds=5, secrets=PowertoolsSecrets())
    for _ in range(4):
        assert (await client.send(request(agent))).state == "completed"
    assert endpoint.calls == 1
    assert endpoint.forms == [{"grant_type": "client_credentials", "scope": "a2a.invoke"}]
    assert gate.seen == ["Bearer tok-1-orchestrator"] * 4


async def test_an_oauth2_token_is_renewed_before_it_expires(serve: Serve, aws: Any) -> None:
    import asyncio

    gate, endpoint, agent = await oauth_setup(serve, aws, expires_in=1)
    client = A2AClient(timeout_seconds=5, secrets=PowertoolsSecrets())
    await client.send(request(agent))
    await asyncio.sleep(1.0)  # renewed a tenth of its life before it ends: at 0.9 s
    await client.send(request(agent))
    assert endpoint.calls == 2
    assert gate.seen == ["Bearer tok-1-orchestrator", "Bearer tok-2-orchestrator"]


async def test_a_revoked_oauth2_token_is_refreshed_once_on_401(serve: Serve, aws: Any) -> None:
    gate, endpoint, agent = await oauth_setup(serve, aws)
    client = A2AClient(timeout_seconds=5, secrets=PowertoolsSecrets())
    await client.send(request(agent))
    gate.accepted.clear()  # the agent forgets every token it knew
    assert (await client.send(request(agent))).state == "completed"
    assert endpoint.calls == 2
    assert gate.refusals == 1


async def test_a_token_endpoint_refusing_the_client_is_auth_failed(serve: Serve, aws: Any) -> None:
    gate, endpoint, agent = await oauth_setup(serve, aws)
    endpoint.client_secret = "rotated-elsewhere"
    with pytest.raises(AgentFailure) as failure:
        await A2AClient(timeout_seconds=5, secrets=PowertoolsSecrets()).send(request(agent))
    assert failure.value.code is FailureCode.AUTH_FAILED
    assert "HTTP 401 (invalid_client)" in failure.value.message
    assert "client-s3cret" not in failure.value.message
    assert endpoint.calls == 2  # asked afresh once
    assert gate.seen == []  # the agent never called


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def mtls_server(pki: Pki) -> dict[str, Any]:
    """uvicorn's options for an agent on https that asks every client for a certificate from
    the test CA."""
    return {"ssl_certfile": str(pki.server_cert), "ssl_keyfile": str(pki.server_key),
            "ssl_ca_certs": str(pki.ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}


async def test_mutual_tls_presents_the_certificate_from_the_secret(pki: Pki, aws: Any) -> None:
    aws["secrets"].create_secret(Name="of/account-mtls", SecretString=json.dumps(pki.client))
    aws["secrets"].create_secret(Name="of/rogue-mtls",
                                 SecretString=json.dumps(pki.rogue_client))
    async with serving(lambda url: build_agent_app("account", url), **mtls_server(pki)) as url:
        client = A2AClient(timeout_seconds=5, secrets=PowertoolsSecrets())
        good = Agent("account", url, "1.0",
                     mtls=MutualTls(SecretRef("secretsmanager", "of/account-mtls")))
        reply = await client.send(request(good))
        assert reply.state == "completed"
        assert (await client.send(request(good))).state == "completed"  # a pooled connection
        rogue = Agent("account", url, "1.0",
                      mtls=MutualTls(SecretRef("secretsmanager", "of/rogue-mtls")))
        with pytest.raises(AgentFailure) as failure:
            await client.send(request(rogue))
        assert failure.value.code is FailureCode.AUTH_FAILED
        assert "client certificate" in failure.value.message


async def test_a_card_asking_for_unconfigured_credentials_is_told_once(serve: Serve) -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    card = {"name": "secure", "supportedInterfaces": [{"protocolVersion": "1.0"}],
            "securitySchemes": {"bearerAuth": {"httpAuthSecurityScheme": {"scheme": "Bearer"}}},
            "securityRequirements": [{"schemes": {"bearerAuth": {"list": []}}}]}

    def make(url: str) -> Starlette:
        async def serve_card(_: Any) -> JSONResponse:
            return JSONResponse(card)

        return Starlette(routes=[Route("/.well-known/agent-card.json", serve_card),
                                 Mount("/", build_agent_app("closing", url))])

    url = await serve(make)
    told: list[tuple[str, list[dict[str, str]]]] = []
    client = A2AClient(timeout_seconds=5, on_unmet_auth=lambda a, asked: told.append((a, asked)))
    for _ in range(2):
        await client.send(request(Agent("closing", url)))  # unpinned: the card is read first
    assert told == [("closing", [{"bearerAuth": "http:bearer"}])]
    pinned: list[str] = []
    other = A2AClient(timeout_seconds=5, on_unmet_auth=lambda a, _: pinned.append(a))
    await other.send(request(Agent("closing", url, "1.0")))  # pinned: read in the background
    import asyncio

    for _ in range(100):
        if pinned:
            break
        await asyncio.sleep(0.01)
    assert pinned == ["closing"]


async def test_no_secret_reaches_a_step_an_answer_or_a_log(
    serve: Serve, aws: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    aws["secrets"].create_secret(Name="of/greeting-token", SecretString="wrong-value-xyz")
    gate = Gate(accepted={f"Bearer {TOKEN}"})
    url = await guarded_agent(serve, gate, "greeting")
    default = Path(__file__).parents[2] / "layers/core/orchestrator_flows/default_flow.yaml"
    flow = tmp_path / "flow.yaml"
    flow.write_text(re.sub(
        r"(?m)^  greeting: .*$",
        f'  greeting: {{url: "{url}", a2a_version: "1.0", auth: {{type: bearer, '
        'secret: "secretsmanager:of/greeting-token"}}', default.read_text()))
    runtime = Runtime.build(Settings(orchestrator_config=flow))
    caplog.set_level(logging.DEBUG)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        answer = await api.post("/orchestrate", json=body("greeting"))
        steps = await api.get("/session/CALL-1/steps")
        session = await api.get("/session/CALL-1")
    await runtime.aclose()
    assert answer.status_code == 200
    assert answer.json()["status"] == "error"
    assert answer.json()["response"]["error"]["code"] == "agent_auth_failed"
    for text in (answer.text, steps.text, session.text, caplog.text):
        assert "wrong-value-xyz" not in text
    assert gate.refusals == 2
