"""What an agent card's security schemes ask for (A2A 1.0 `securitySchemes` and
`securityRequirements`; 0.3's OpenAPI-style `securitySchemes` and `security`), against what the
flow file configures for the agent."""

from __future__ import annotations

from typing import Any

from orchestrator_flows.flow import Agent, ApiKeyAuth, BearerAuth, OAuth2ClientCredentials

# 1.0's oneof field of a SecurityScheme, by the kind it is.
_V1_KINDS = {"httpAuthSecurityScheme": "http", "apiKeySecurityScheme": "apiKey",
             "oauth2SecurityScheme": "oauth2", "openIdConnectSecurityScheme": "openIdConnect",
             "mtlsSecurityScheme": "mtls"}
_V03_KINDS = {"http": "http", "apiKey": "apiKey", "oauth2": "oauth2",
              "openIdConnect": "openIdConnect", "mutualTLS": "mtls"}


def configured(agent: Agent) -> frozenset[str]:
    """The schemes the flow's credentials for `agent` satisfy, in `scheme_kind`'s words."""
    kinds: set[str] = set()
    if isinstance(agent.auth, BearerAuth):
        kinds.add("http:bearer")
    elif isinstance(agent.auth, OAuth2ClientCredentials):
        kinds |= {"http:bearer", "oauth2", "openIdConnect"}
    elif isinstance(agent.auth, ApiKeyAuth):
        kinds.add(f"apiKey:header:{agent.auth.header.lower()}")
    if agent.mtls is not None:
        kinds.add("mtls")
    return frozenset(kinds)


def scheme_kind(scheme: Any) -> str:
    """One security scheme as `http:bearer`, `apiKey:header:x-api-key`, `oauth2`,
    `openIdConnect`, `mtls` (`unknown` for what neither version defines)."""
    if not isinstance(scheme, dict):
        return "unknown"
    kind, body = None, scheme
    for field, name in _V1_KINDS.items():
        if isinstance(scheme.get(field), dict):
            kind, body = name, scheme[field]
            break
    else:
        kind = _V03_KINDS.get(str(scheme.get("type")))
    if kind == "http":
        return f"http:{str(body.get('scheme', '')).lower()}"
    if kind == "apiKey":
        where = body.get("location", body.get("in", ""))
        return f"apiKey:{str(where).lower()}:{str(body.get('name', '')).lower()}"
    return kind or "unknown"


def required(card: Any) -> list[dict[str, str]]:
    """The card's alternatives, each the schemes (name → kind) that must all be met; empty when
    the card asks for nothing. Without requirements, each declared scheme is one alternative."""
    if not isinstance(card, dict) or not isinstance(card.get("securitySchemes"), dict):
        return []
    schemes: dict[str, Any] = card["securitySchemes"]
    names: list[list[str]] = []
    requirements = card.get("securityRequirements") or card.get("security") or []
    for requirement in requirements if isinstance(requirements, list) else []:
        if isinstance(requirement, dict):
            inner = requirement.get("schemes", requirement)  # 1.0 wraps them in `schemes`
            if isinstance(inner, dict):
                if not inner:
                    return []  # an empty requirement: calling without credentials is allowed
                names.append([str(name) for name in inner])
    if not names:
        names = [[str(name)] for name in schemes]
    # The card's own words go to a log line: bounded.
    return [{name[:64]: scheme_kind(schemes.get(name))[:128] for name in alternative}
            for alternative in names[:8]]


def unmet(card: Any, agent: Agent) -> list[dict[str, str]] | None:
    """The card's alternatives when the flow's credentials meet none of them, else None."""
    alternatives = required(card)
    if not alternatives:
        return None
    have = configured(agent)
    if any(set(alternative.values()) <= have for alternative in alternatives):
        return None
    return alternatives
