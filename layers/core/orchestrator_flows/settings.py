"""Runtime settings, parsed once from the environment (DESIGN §4) into a typed model.

The core never reads `os.environ` itself: entry points call `Settings.from_env()`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator_flows.errors import SettingsError

if TYPE_CHECKING:
    from orchestrator_flows.flow import Flow

AGENT_URL_PREFIX = "AGENT_URL_"
AGENT_AUTH_PREFIX = "AGENT_AUTH_"
AGENT_VERSIONS_PREFIX = "AGENT_VERSIONS_"
# host:port, or the X-Ray daemon's own "tcp:host:port udp:host:port"
_DAEMON_ADDRESS = r"^(?:[^:\s]*:\d{1,5}|(?:(?:tcp|udp):[^:\s]*:\d{1,5}\s*)+)$"
# Each setting and the environment variable it is read from.
VARIABLES = {
    "redis_url": "REDIS_URL",
    "redis_mode": "REDIS_MODE",
    "orchestrator_config": "ORCHESTRATOR_CONFIG",
    "session_ttl_seconds": "SESSION_TTL_SECONDS",
    "agent_timeout_seconds": "AGENT_TIMEOUT_SECONDS",
    "turn_wait_seconds": "TURN_WAIT_SECONDS",
    "redis_socket_timeout_seconds": "REDIS_SOCKET_TIMEOUT_SECONDS",
    "redis_connect_timeout_seconds": "REDIS_CONNECT_TIMEOUT_SECONDS",
    "redis_max_connections": "REDIS_MAX_CONNECTIONS",
    "redis_ca_certs": "REDIS_CA_CERTS",
    "redis_iam_user": "REDIS_IAM_USER",
    "redis_cache_name": "REDIS_CACHE_NAME",
    "aws_region": "AWS_REGION",
    "max_steps_per_call": "MAX_STEPS_PER_CALL",
    "service_name": "POWERTOOLS_SERVICE_NAME",
    "metrics_namespace": "POWERTOOLS_METRICS_NAMESPACE",
    "trace_disabled": "POWERTOOLS_TRACE_DISABLED",
    "xray_daemon_address": "AWS_XRAY_DAEMON_ADDRESS",
    "agent_secrets_max_age_seconds": "AGENT_SECRETS_MAX_AGE_SECONDS",
    "agent_allow_http": "AGENT_ALLOW_HTTP",
    "archive_table": "ARCHIVE_TABLE",
    "retention_days": "RETENTION_DAYS",
    "archive_idle_seconds": "ARCHIVE_IDLE_SECONDS",
}


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: str | None = Field(
        default=None, description="redis://, rediss:// or unix:// URL of the session store; "
        "unset: an embedded in-memory store (local runs only)")
    redis_mode: Literal["standalone", "cluster"] = Field(
        default="standalone", description="standalone or cluster (ElastiCache Serverless)")
    orchestrator_config: Path | None = Field(
        default=None, description="the flow file (YAML); unset: the default five-stage flow")
    agent_urls: dict[str, str] = Field(default_factory=dict)
    # AGENT_AUTH_<NAME>: an agent's `auth` / `mtls` as JSON, shaped as in the flow file.
    agent_auth: dict[str, Any] = Field(default_factory=dict)
    # AGENT_VERSIONS_<NAME>: an agent's versions as a JSON list, shaped as in the flow file.
    agent_versions: dict[str, Any] = Field(default_factory=dict)
    session_ttl_seconds: int = Field(
        default=3600, ge=60, le=7 * 24 * 3600,
        description="how long a call is kept after its last turn, in seconds")
    agent_timeout_seconds: float = Field(
        default=15.0, gt=0, le=600,
        description="the deadline of one agent call, its retries included, in seconds")
    turn_wait_seconds: float = Field(
        default=5.0, ge=0, le=25,
        description="how long a turn that finds another turn of its call in flight waits its "
        "turn (in arrival order) before 409 step_in_progress, in seconds; 0: it does not wait")
    # Short socket timeouts keep a dead Redis a fast 503 instead of a hang.
    redis_socket_timeout_seconds: float = Field(
        default=0.75, gt=0, le=10, description="Redis read timeout, in seconds")
    # A connect measured on a busy event loop (a burst opening many connections, a cold
    # start) can complete in the kernel yet be seen late: 1 s leaves room for that and still
    # answers an unreachable Redis within the store's 1.9 s deadline.
    redis_connect_timeout_seconds: float = Field(
        default=1.0, gt=0, le=10, description="Redis connect timeout, in seconds")
    redis_max_connections: int = Field(
        default=64, ge=1, le=10_000, description="Redis connections per process")
    redis_ca_certs: Path | None = Field(
        default=None, description="CA bundle for rediss:// (unset: the system's)")
    # ElastiCache's IAM authentication: the user (its id, which is its name) and the cache whose
    # name the token is signed for (kv/iam_auth.py); both or neither.
    redis_iam_user: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9-]{0,39}$",
        description="ElastiCache user id to authenticate as with an IAM token (rediss:// only)")
    redis_cache_name: str | None = Field(
        default=None, pattern=r"^[A-Za-z][A-Za-z0-9-]{0,39}$",
        description="the ElastiCache cache the IAM token is for")
    aws_region: str | None = Field(default=None, description="set by Lambda")
    # A call is a conversation, not a stream: past this many steps it is looping.
    max_steps_per_call: int = Field(
        default=200, ge=1, le=10_000,
        # 10,000: an erased call's tombstone keeps each step's 32-byte hash in one 400 KB item.
        description="how many steps a call may take")
    archive_table: str | None = Field(
        default=None, min_length=3, max_length=255, pattern=r"^[A-Za-z0-9_.-]+$",
        description="the DynamoDB table of archived calls (read by `orchestrator-flows "
        "verify`); unset: no archive")
    retention_days: int = Field(
        default=90, ge=1, le=3650, description="how long an archived call is kept, in days")
    archive_idle_seconds: int = Field(
        default=2700, ge=60, le=7 * 24 * 3600,
        description="a call with no turn for this long is archived (below SESSION_TTL_SECONDS)")
    # Powertools' own variables, read here so that nothing else reads the environment.
    service_name: str = Field(
        default="orchestrator-flows", min_length=1,
        description="the service in logs and metrics (Lambda)")
    metrics_namespace: str = Field(
        default="OrchestratorFlows", min_length=1,
        description="the CloudWatch metrics namespace (Lambda)")
    trace_disabled: bool = Field(default=False, description="true: no X-Ray tracing (Lambda)")
    xray_daemon_address: str = Field(
        default="127.0.0.1:2000", pattern=_DAEMON_ADDRESS,
        description="where X-Ray subsegments are sent: host:port, or the daemon's "
        "'tcp:host:port udp:host:port' form (Lambda sets it)")

    agent_secrets_max_age_seconds: float = Field(
        default=300.0, ge=1, le=86_400,
        description="how long an agent's credential read from a secret is kept before it is "
        "read again, in seconds (a 401 re-reads it at once)")
    agent_allow_http: bool = Field(
        default=False, description="true: a deployed function may call agents over plain "
        "http:// (never advised; loopback http:// is always allowed, for local runs)")
    # Not from the environment: set by the Lambda entry point (`from_env(deployed=True)`).
    deployed: bool = Field(default=False, exclude=True)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _archived_before_expiry(self) -> Settings:
        # An idle call is archived before Redis lets it go (the sweeper runs every few
        # minutes: a margin of at least five).
        if self.archive_table is not None and (
                self.archive_idle_seconds > self.session_ttl_seconds - 300):
            raise ValueError(
                f"ARCHIVE_IDLE_SECONDS ({self.archive_idle_seconds}) must be at least 300 below "
                f"SESSION_TTL_SECONDS ({self.session_ttl_seconds}): an idle call must be "
                "archived before it expires")
        if (self.redis_iam_user is None) != (self.redis_cache_name is None):
            raise ValueError("REDIS_IAM_USER and REDIS_CACHE_NAME go together: the token is "
                             "signed for the user and the cache")
        if self.redis_iam_user is not None:
            if self.aws_region is None:
                raise ValueError("REDIS_IAM_USER needs AWS_REGION (the token's signing region)")
            if self.deployed and not (self.redis_url or "").startswith("rediss://"):
                raise ValueError("REDIS_IAM_USER needs a rediss:// REDIS_URL: ElastiCache takes "
                                 "IAM tokens over TLS only")
        return self

    @property
    def claim_lease_seconds(self) -> float:
        """How long a claim outlives a crashed turn: the agent deadline plus a margin for Redis."""
        return self.agent_timeout_seconds + 5.0

    @property
    def breaker_probe_seconds(self) -> float:
        """How long a half-open breaker waits for its probe before letting another through:
        the agent deadline and a second."""
        return self.agent_timeout_seconds + 1.0

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, deployed: bool = False
    ) -> Settings:
        """The settings from `env` (the process's environment by default). `deployed` (in
        Lambda): Redis is required, and agents are called over https only."""
        env = os.environ if env is None else env
        values: dict[str, object] = {
            field: env[var] for field, var in VARIABLES.items() if env.get(var, "") != ""
        }
        values["agent_urls"] = {
            key[len(AGENT_URL_PREFIX) :].lower(): url
            for key, url in env.items()
            if key.startswith(AGENT_URL_PREFIX) and url
        }
        for field, prefix in (("agent_auth", AGENT_AUTH_PREFIX),
                              ("agent_versions", AGENT_VERSIONS_PREFIX)):
            by_agent: dict[str, Any] = {}
            for key, text in env.items():
                if key.startswith(prefix) and text:
                    try:
                        by_agent[key[len(prefix):].lower()] = json.loads(text)
                    except json.JSONDecodeError as exc:
                        raise SettingsError(f"{key}: not JSON: {exc.msg}") from None
            values[field] = by_agent
        values["deployed"] = deployed
        if deployed and "redis_url" not in values:
            raise SettingsError(
                "REDIS_URL is not set: in Lambda the session store must be Redis "
                "(e.g. rediss://<cache-endpoint>:6379); the embedded store is for local runs only"
            )
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else ""
            var = VARIABLES.get(field, field.upper())
            message = first["msg"].removeprefix("Value error, ")
            raise SettingsError(f"{var}: {message}" if var else message) from None

    def load_flow(self) -> Flow:
        """The flow file named by ORCHESTRATOR_CONFIG (or the default), with URL overrides.
        Deployed, an agent (or a token endpoint) on plain http:// off loopback is refused: a
        customer's words and the agent's credentials would cross the network in clear."""
        from orchestrator_flows.flow_file import (
            default_flow,
            load_flow,
            with_agent_credentials,
            with_agent_versions,
        )

        flow = load_flow(self.orchestrator_config) if self.orchestrator_config else default_flow()
        if self.agent_urls:
            flow = flow.with_agent_urls(self.agent_urls)
        if self.agent_versions:
            flow = with_agent_versions(flow, self.agent_versions,
                                       AGENT_VERSIONS_PREFIX.rstrip("_"))
        if self.agent_auth:
            flow = with_agent_credentials(flow, self.agent_auth, AGENT_AUTH_PREFIX.rstrip("_"))
        insecure = flow.insecure_urls()
        if insecure and self.deployed and not self.agent_allow_http:
            raise SettingsError(
                "agents are called over https only when deployed; plain http:// for "
                + ", ".join(f"{where} ({url})" for where, url in insecure)
                + " (AGENT_ALLOW_HTTP=true allows it)")
        return flow

