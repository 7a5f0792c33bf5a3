"""The stack's configuration: one typed object read from CDK context (cdk.json or `-c key=value`)
and validated before any resource is defined, so a bad value fails `cdk synth` with its name."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FLOW = ROOT / "layers" / "core" / "orchestrator_flows" / "default_flow.yaml"

# API Gateway HTTP APIs cut every integration at 30 s: an orchestrate turn must end before that.
API_GATEWAY_TIMEOUT_SECONDS = 30
# What a turn spends beside the agent call: two Redis scripts (each bounded at 1.9 s by the store)
# plus the function's own work; the function's timeout is the agent's plus this.
REDIS_MARGIN_SECONDS = 5
DEFAULT_TURN_WAIT_SECONDS = 5.0
# Lambda keeps this much of an account's concurrency unreserved: no function may reserve it.
UNRESERVED_MINIMUM = 100
# CodeDeploy's predefined configurations for Lambda, by the names `deployment` takes.
DEPLOYMENTS = ("ALL_AT_ONCE", "CANARY_10_PERCENT_5_MINUTES", "CANARY_10_PERCENT_10_MINUTES",
               "CANARY_10_PERCENT_15_MINUTES", "CANARY_10_PERCENT_30_MINUTES",
               "LINEAR_10_PERCENT_EVERY_1_MINUTE", "LINEAR_10_PERCENT_EVERY_2_MINUTES",
               "LINEAR_10_PERCENT_EVERY_3_MINUTES", "LINEAR_10_PERCENT_EVERY_10_MINUTES")


class ConfigError(ValueError):
    """A context value cannot configure the stack; the message names the context key."""


class _Node(Protocol):
    def try_get_context(self, key: str) -> Any: ...


class StackConfig(BaseModel):
    """Every context key the stack reads. Values given with `-c` arrive as strings: numbers and
    booleans are coerced, maps and lists may be given as JSON or comma-separated."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    stage: str = Field("dev", pattern=r"^[a-z][a-z0-9-]{0,19}$")
    # What the stack is built for: `prod` keeps logs and data, protects the stack, builds a NAT
    # gateway per AZ, sizes orchestrate's reserved concurrency and deploys it gradually; `dev`
    # stays cheap. Unset: `prod` for the stage named prod, `dev` for any other.
    profile_given: Literal["dev", "prod"] | None = Field(None, alias="profile")
    owner: str | None = Field(None, pattern=r"^[A-Za-z0-9_.@+=:/ -]{1,128}$")
    vpc_id: str | None = Field(None, alias="vpcId", pattern=r"^vpc-[0-9a-f]{8,17}$")
    isolated: bool = False
    nat_gateways_given: int | None = Field(None, alias="natGateways", ge=1, le=2)
    agent_base_url: str | None = Field(None, alias="agentBaseUrl")
    agent_urls: dict[str, str] = Field(default_factory=dict, alias="agentUrls")
    # Per agent, its credentials as the flow file writes them: {"auth": {...}, "mtls": {...}};
    # every secret by ARN (SSM: by ARN or parameter name), so the function can read exactly it.
    agent_auth: dict[str, dict[str, Any]] = Field(default_factory=dict, alias="agentAuth")
    allow_http_agents: bool = Field(False, alias="allowHttpAgents")
    # Per agent, its versions as the flow file writes them: [{"name", "url", "weight"}, ...].
    # Weights change with a deploy of this context alone; calls keep the version they hold.
    agent_versions: dict[str, list[dict[str, Any]]] = Field(default_factory=dict,
                                                            alias="agentVersions")
    session_ttl_seconds: int = Field(3600, alias="sessionTtlSeconds", ge=60, le=86_400)
    agent_timeout_seconds: float = Field(15, alias="agentTimeoutSeconds", gt=0)
    # How long a turn waits for another of its call (TURN_WAIT_SECONDS); unset: 5 s, or what
    # API Gateway's 30 s leaves beside the agent's deadline.
    turn_wait_seconds_given: float | None = Field(None, alias="turnWaitSeconds", ge=0, le=25)
    orchestrate_memory_mb: int = Field(512, alias="orchestrateMemoryMb", ge=128, le=10_240)
    read_memory_mb: int = Field(256, alias="readMemoryMb", ge=128, le=10_240)
    reserved_concurrency_given: int | None = Field(None, alias="reservedConcurrency", ge=1)
    # The account's concurrency limit in the region (1,000 unless raised): what orchestrate's
    # reserved concurrency is sized against.
    account_concurrency: int = Field(1000, alias="accountConcurrency", ge=UNRESERVED_MINIMUM + 2)
    # Cold starts: SnapStart on published versions (on unless provisioned concurrency is asked
    # for), or provisioned concurrency on orchestrate's live alias.
    snap_start_given: bool | None = Field(None, alias="snapStart")
    provisioned_concurrency: int | None = Field(None, alias="provisionedConcurrency", ge=1)
    deployment_given: str | None = Field(None, alias="deployment")
    throttle_rate_limit: float = Field(100, alias="throttleRateLimit", gt=0)
    throttle_burst_limit: int = Field(200, alias="throttleBurstLimit", ge=1)
    jwt_issuer: str | None = Field(None, alias="jwtIssuer")
    jwt_audience: list[str] = Field(default_factory=list, alias="jwtAudience")
    cors_allow_origins: list[str] = Field(default_factory=list, alias="corsAllowOrigins")
    log_retention_days: int = Field(30, alias="logRetentionDays")
    log_level: str = Field("INFO", alias="logLevel", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    alarm_email: str | None = Field(None, alias="alarmEmail", pattern=r"^[^@\s]+@[^@\s]+$")
    # An existing topic (a pager's, a chat integration's) that every alarm notifies as well.
    alarm_topic_arn: str | None = Field(
        None, alias="alarmTopicArn",
        pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")
    latency_alarm_ms: int = Field(5000, alias="latencyAlarmMs", ge=100)
    cache_max_data_gb: int = Field(5, alias="cacheMaxDataGb", ge=1, le=5000)
    cache_max_ecpu_per_second: int = Field(5000, alias="cacheMaxEcpuPerSecond", ge=1000,
                                           le=15_000_000)
    # The archive: how long a call's record is kept, when an idle call is archived, how often
    # the sweeper runs.
    retention_days: int = Field(90, alias="retentionDays", ge=1, le=3650)
    archive_idle_seconds: int = Field(2700, alias="archiveIdleSeconds", ge=60)
    sweep_minutes: int = Field(5, alias="sweepMinutes", ge=1, le=15)

    @field_validator("agent_urls", "agent_auth", "agent_versions", "jwt_audience",
                     "cors_allow_origins", mode="before")
    @classmethod
    def _from_cli_string(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value.strip().startswith(("{", "[")):
            return json.loads(value)
        return [item.strip() for item in value.split(",") if item.strip()]

    @field_validator("agent_base_url")
    @classmethod
    def _base_is_a_url(cls, value: str | None) -> str | None:
        if value is not None:
            _check_agent_url(value)
        return value

    @field_validator("agent_urls")
    @classmethod
    def _urls_are_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
                raise ValueError(f"agent name {name!r} must match [a-z][a-z0-9_]*")
            _check_agent_url(url)
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _a_retention_cloudwatch_offers(cls, value: int) -> int:
        if value not in RETENTION_DAYS:
            raise ValueError(f"must be one of CloudWatch's retentions: {sorted(RETENTION_DAYS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StackConfig:
        if self.agent_timeout_seconds + REDIS_MARGIN_SECONDS >= API_GATEWAY_TIMEOUT_SECONDS:
            raise ValueError(
                f"agentTimeoutSeconds={self.agent_timeout_seconds:g} leaves no room for Redis in "
                f"API Gateway's {API_GATEWAY_TIMEOUT_SECONDS} s: at most "
                f"{API_GATEWAY_TIMEOUT_SECONDS - REDIS_MARGIN_SECONDS - 1} s")
        if self.turn_wait_seconds_given is not None and (
                self.turn_wait_seconds_given > self._wait_room):
            raise ValueError(
                f"turnWaitSeconds={self.turn_wait_seconds_given:g} with agentTimeoutSeconds="
                f"{self.agent_timeout_seconds:g} would outlast API Gateway's "
                f"{API_GATEWAY_TIMEOUT_SECONDS} s: at most {self._wait_room:g} s")
        if self.jwt_issuer is not None and not self.jwt_audience:
            raise ValueError("jwtIssuer needs jwtAudience (one or more client ids)")
        if self.jwt_audience and self.jwt_issuer is None:
            raise ValueError("jwtAudience needs jwtIssuer")
        if self.jwt_issuer is not None and not self.jwt_issuer.startswith("https://"):
            raise ValueError("jwtIssuer must be an https:// URL")
        if self.throttle_burst_limit < self.throttle_rate_limit:
            raise ValueError("throttleBurstLimit must be at least throttleRateLimit")
        if self.outside_dev and self.alarm_email is None and self.alarm_topic_arn is None:
            raise ValueError(
                f"stage {self.stage} has alarms that would reach no one: set alarmEmail or "
                "alarmTopicArn (only the dev stage of the dev profile may go without)")
        if self.production and self.owner is None:
            raise ValueError("the prod profile tags every resource with its owner: set owner "
                             "(a team or an address)")
        if self.provisioned_concurrency is not None and self.snap_start_given:
            raise ValueError("provisionedConcurrency and snapStart are alternatives (Lambda "
                             "does not run SnapStart on provisioned concurrency): choose one")
        if self.deployment_given is not None and self.deployment_given not in DEPLOYMENTS:
            raise ValueError(f"deployment must be one of {', '.join(DEPLOYMENTS)}")
        if (self.reserved_concurrency_given is not None
                and self.reserved_concurrency_given > self.most_reservable):
            raise ValueError(
                f"reservedConcurrency={self.reserved_concurrency_given} leaves less than "
                f"Lambda's {UNRESERVED_MINIMUM} unreserved (and the sweeper's 1) of "
                f"accountConcurrency={self.account_concurrency}")
        if (self.provisioned_concurrency is not None and self.reserved_concurrency is not None
                and self.provisioned_concurrency > self.reserved_concurrency):
            raise ValueError(
                f"provisionedConcurrency={self.provisioned_concurrency} is above orchestrate's "
                f"reserved concurrency ({self.reserved_concurrency})")
        # An idle call is archived before Redis lets it go: its idle time, then up to one sweep
        # interval and one sweep, must fit in the session TTL.
        if self.archive_idle_seconds + 2 * self.sweep_minutes * 60 > self.session_ttl_seconds:
            raise ValueError(
                f"archiveIdleSeconds={self.archive_idle_seconds} and sweepMinutes="
                f"{self.sweep_minutes} leave no time to archive an idle call before its "
                f"session TTL ({self.session_ttl_seconds} s) runs out: idle + 2 sweeps must "
                "fit in it")
        return self

    @property
    def is_dev(self) -> bool:
        """A stage whose data may go with the stack (the default, `dev`); any other stage keeps
        its data (see outside_dev)."""
        return self.stage == "dev"

    @property
    def profile(self) -> Literal["dev", "prod"]:
        if self.profile_given is not None:
            return self.profile_given
        return "prod" if self.stage == "prod" else "dev"

    @property
    def production(self) -> bool:
        return self.profile == "prod"

    @property
    def outside_dev(self) -> bool:
        """A stack that serves real calls: any stage but dev, and any stack of the prod profile.
        Its archive is kept (and protected) when the stack goes, its cache is snapshotted
        daily, and its alarms must reach someone."""
        return not self.is_dev or self.production

    @property
    def logs_removal(self) -> RemovalPolicy:
        """Log groups outlive the stack in production (an incident's logs survive a rollback
        or a delete); in dev they go with it."""
        return RemovalPolicy.RETAIN if self.production else RemovalPolicy.DESTROY

    @property
    def nat_gateways(self) -> int:
        """One per AZ (two) in production: an AZ's outage does not cut every agent call."""
        if self.nat_gateways_given is not None:
            return self.nat_gateways_given
        return 2 if self.production else 1

    @property
    def reserved_concurrency(self) -> int | None:
        """Orchestrate's reserved concurrency: as given; in production, sized so the API's
        throttle rate with every turn at its timeout fits (rate × timeout), within what the
        account can reserve; in dev, none."""
        if self.reserved_concurrency_given is not None:
            return self.reserved_concurrency_given
        if not self.production:
            return None
        return min(self.concurrency_at_throttle, self.reservable_concurrency)

    @property
    def concurrency_at_throttle(self) -> int:
        """Executions in flight at the throttle rate when every turn runs to its timeout."""
        return math.ceil(self.throttle_rate_limit * self.function_timeout_seconds)

    @property
    def reservable_concurrency(self) -> int:
        """What orchestrate may reserve by default: half the account's limit, and never past
        most_reservable. Half leaves room for the
        read functions, other stacks' reservations (another stage's sweeper, say) and other
        workloads: reserving all of it would fail the next deploy that reserves anything."""
        return min(self.account_concurrency // 2, self.most_reservable)

    @property
    def most_reservable(self) -> int:
        """The account's limit less Lambda's unreserved minimum and the sweeper's one."""
        return self.account_concurrency - UNRESERVED_MINIMUM - 1

    @property
    def snap_start(self) -> bool:
        if self.snap_start_given is not None:
            return self.snap_start_given
        return self.provisioned_concurrency is None

    @property
    def deployment(self) -> str:
        """How a new orchestrate version takes traffic: 10 % for 5 minutes first in production
        (its canary alarms can roll it back), at once in dev (the alarms still page)."""
        if self.deployment_given is not None:
            return self.deployment_given
        return "CANARY_10_PERCENT_5_MINUTES" if self.production else "ALL_AT_ONCE"

    @field_validator("agent_versions")
    @classmethod
    def _weighted_versions(
        cls, value: dict[str, list[dict[str, Any]]]
    ) -> dict[str, list[dict[str, Any]]]:
        for name, versions in value.items():
            if not versions or not all(isinstance(v, dict) and {"name", "url", "weight"} <= set(v)
                                       for v in versions):
                raise ValueError(f"{name}: must be a list of {{name, url, weight}}")
            for version in versions:
                _check_agent_url(str(version["url"]))
            if not any(isinstance(v["weight"], int) and v["weight"] > 0 for v in versions):
                raise ValueError(f"{name}: no version has a weight above 0")
        return value

    @field_validator("agent_auth")
    @classmethod
    def _credentials_by_arn(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, spec in value.items():
            if not isinstance(spec, dict) or not set(spec) <= {"auth", "mtls"} or not spec:
                raise ValueError(f"{name}: must be {{\"auth\": {{...}}, \"mtls\": {{...}}}}")
            for ref in _secret_refs(spec):
                if not _SECRET_REF.fullmatch(ref):
                    raise ValueError(
                        f"{name}: {ref!r} must be secretsmanager:<secret ARN> or "
                        "ssm:<parameter ARN or name>")
        return value

    def secret_arns(self, partition: str, region: str, account: str) -> dict[str, list[str]]:
        """What the orchestrate function may read, by service: exactly the secrets and
        parameters the agents' credentials name."""
        found: dict[str, list[str]] = {"secretsmanager": [], "ssm": []}
        for spec in self.agent_auth.values():
            for ref in _secret_refs(spec):
                source, name = ref.split(":", 1)
                if source == "ssm" and not name.startswith("arn:"):
                    name = (f"arn:{partition}:ssm:{region}:{account}:parameter/"
                            f"{name.lstrip('/')}")
                if name not in found[source]:
                    found[source].append(name)
        return found

    @property
    def log_retention(self) -> logs.RetentionDays:
        return logs.RetentionDays[RETENTION_DAYS[self.log_retention_days]]

    @property
    def _wait_room(self) -> float:
        """What API Gateway's 30 s leave for a turn's wait, beside its agent and Redis."""
        return max(0.0, API_GATEWAY_TIMEOUT_SECONDS - 1 - REDIS_MARGIN_SECONDS
                   - math.ceil(self.agent_timeout_seconds))

    @property
    def turn_wait_seconds(self) -> float:
        if self.turn_wait_seconds_given is not None:
            return self.turn_wait_seconds_given
        return min(DEFAULT_TURN_WAIT_SECONDS, self._wait_room)

    @property
    def function_timeout_seconds(self) -> int:
        """A turn's wait, its agent's deadline, and two Redis scripts."""
        return (math.ceil(self.agent_timeout_seconds) + REDIS_MARGIN_SECONDS
                + math.ceil(self.turn_wait_seconds))

    def agent_endpoints(self, agents: list[str]) -> dict[str, str]:
        """Each agent's URL: its own from agentUrls, else agentBaseUrl/<name>/. An agent left
        without one would keep the flow file's loopback URL, which nothing in AWS answers."""
        unknown = sorted(set(self.agent_urls) - set(agents))
        if unknown:
            raise ConfigError(f"agentUrls: {', '.join(unknown)} not agents of the flow "
                              f"(agents: {', '.join(agents)})")
        unknown_versions = sorted(set(self.agent_versions) - set(agents))
        if unknown_versions:
            raise ConfigError(f"agentVersions: {', '.join(unknown_versions)} not agents of the "
                              f"flow (agents: {', '.join(agents)})")
        endpoints = {}
        for name in agents:
            if name in self.agent_versions:
                continue  # each version has its own URL
            if name in self.agent_urls:
                endpoints[name] = self.agent_urls[name]
            elif self.agent_base_url is not None:
                endpoints[name] = f"{self.agent_base_url.rstrip('/')}/{name}/"
        unknown_auth = sorted(set(self.agent_auth) - set(agents))
        if unknown_auth:
            raise ConfigError(f"agentAuth: {', '.join(unknown_auth)} not agents of the flow "
                              f"(agents: {', '.join(agents)})")
        if not self.allow_http_agents:
            plain = [f"agent {name} ({url})" for name, url in endpoints.items()
                     if not url.lower().startswith("https://")]
            plain += [f"agent {name} version {version['name']} ({version['url']})"
                      for name, versions in self.agent_versions.items() for version in versions
                      if not str(version["url"]).lower().startswith("https://")]
            plain += [f"agent {name}'s token endpoint ({spec['auth']['token_url']})"
                      for name, spec in self.agent_auth.items()
                      if isinstance(spec.get("auth"), dict)
                      and not str(spec["auth"].get("token_url", "https://")).startswith(
                          "https://")]
            if plain:
                raise ConfigError(
                    f"plain http:// for {', '.join(plain)}: a deployed stack calls agents over "
                    "https only (-c allowHttpAgents=true allows it)")
        missing = [name for name in agents
                   if name not in endpoints and name not in self.agent_versions]
        if missing:
            raise ConfigError(
                f"no URL for agent(s) {', '.join(missing)}: set context agentBaseUrl (each agent "
                f"at <base>/<name>/) or agentUrls.<name>, e.g. -c agentBaseUrl=https://agents.example.com")
        return endpoints

    @classmethod
    def from_context(cls, node: _Node) -> StackConfig:
        """From a construct's node (`app.node`): cdk.json's context, then `-c` values."""
        names = [field.alias or name for name, field in cls.model_fields.items()]
        given = {key: value for key in names
                 if (value := node.try_get_context(key)) is not None and value != ""}
        return cls.from_mapping(given)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> StackConfig:
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                key = ".".join(str(part) for part in error["loc"])
                message = error["msg"].removeprefix("Value error, ")
                problems.append(f"context {key}: {message}" if key else f"context: {message}")
            raise ConfigError("; ".join(problems)) from None


# CloudWatch's retentions, by days, as aws_logs.RetentionDays names them.
RETENTION_DAYS = {
    1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS",
    30: "ONE_MONTH", 60: "TWO_MONTHS", 90: "THREE_MONTHS", 120: "FOUR_MONTHS",
    150: "FIVE_MONTHS", 180: "SIX_MONTHS", 365: "ONE_YEAR", 400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1096: "THREE_YEARS", 1827: "FIVE_YEARS",
    2192: "SIX_YEARS", 2557: "SEVEN_YEARS", 2922: "EIGHT_YEARS", 3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}


_SECRET_REF = re.compile(
    r"secretsmanager:arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:\S+"
    r"|ssm:(?:arn:aws[a-z-]*:ssm:[a-z0-9-]+:\d{12}:parameter/\S+|/?[\w./-]+)")


def _secret_refs(spec: dict[str, Any]) -> list[str]:
    auth, mtls = (part if isinstance(part := spec.get(key), dict) else {}
                  for key in ("auth", "mtls"))
    refs = [auth.get("secret"), auth.get("client_secret"), mtls.get("secret")]
    return [str(ref) for ref in refs if ref is not None]


def _check_agent_url(url: str) -> None:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise ValueError(f"{url!r} is not an http(s) URL")


def flow_agents(path: Path = DEFAULT_FLOW) -> list[str]:
    """The agents the shipped flow file names, read as data (infra never imports the core)."""
    document = yaml.safe_load(path.read_text("utf-8"))
    return list(document["agents"])
