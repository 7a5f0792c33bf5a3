"""The composition root: everything a process serves with, built once and explicitly from
Settings (no I/O here: connections open on first use, on the loop that serves them).

The read-only functions build a runtime without turns: no flow file, no YAML, no httpx.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator_flows.breaker import BreakerStore
from orchestrator_flows.observer import Observer, SilentObserver
from orchestrator_flows.settings import Settings
from orchestrator_flows.store import Backend, SessionStore

if TYPE_CHECKING:
    from orchestrator_flows.archive.index import ArchiveIndex
    from orchestrator_flows.archive.store import Archive
    from orchestrator_flows.engine import AgentCaller, Orchestrator
    from orchestrator_flows.kv.iam_auth import IamAuth
    from orchestrator_flows.kv.redis_connection import RedisConnection

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Storage:
    """Where a process keeps state: its calls (the session store's backend) and its agents'
    breakers, side by side on one Redis connection, or each in an embedded keyspace."""

    calls: Backend
    breakers: BreakerStore

    @classmethod
    def embedded(cls, calls: Backend | None = None) -> Storage:
        from orchestrator_flows.breaker.memory_store import MemoryBreakerStore
        from orchestrator_flows.store.memory_backend import MemoryBackend

        return cls(calls or MemoryBackend(), MemoryBreakerStore())

    @classmethod
    def on_redis(cls, settings: Settings) -> Storage:
        from orchestrator_flows.breaker.redis_store import RedisBreakerStore
        from orchestrator_flows.kv.redis_connection import connect
        from orchestrator_flows.store.redis_backend import RedisBackend

        assert settings.redis_url is not None
        connection = connect(
            settings.redis_url,
            settings.redis_mode,
            socket_timeout=settings.redis_socket_timeout_seconds,
            connect_timeout=settings.redis_connect_timeout_seconds,
            max_connections=settings.redis_max_connections,
            ca_certs=str(settings.redis_ca_certs) if settings.redis_ca_certs else None,
            credential_provider=iam_auth(settings),
        )
        return cls(RedisBackend(connection), RedisBreakerStore(connection))

    @classmethod
    def of(cls, settings: Settings) -> Storage:
        if settings.redis_url is not None:
            return cls.on_redis(settings)
        logger.warning(
            "REDIS_URL is not set: sessions live in an embedded in-memory store in this process "
            "(local runs only; they are lost on exit)"
        )
        return cls.embedded()

    def archive_index(self, settings: Settings) -> ArchiveIndex | None:
        """Where calls are scheduled for the archive, if there is one: beside the calls."""
        if settings.archive_table is None:
            return None
        from orchestrator_flows.archive.index import MemoryArchiveIndex, RedisArchiveIndex

        ttl = settings.session_ttl_seconds
        return (RedisArchiveIndex(self.redis, ttl) if self.redis is not None
                else MemoryArchiveIndex(ttl))

    async def close(self) -> None:
        await self.calls.close()  # the breakers' store shares its connection or nothing

    @property
    def redis(self) -> RedisConnection | None:
        """The Redis connection the calls (and the breakers) use; None when embedded."""
        return getattr(self.calls, "connection", None)

    async def drop_connections(self) -> None:
        if self.redis is not None:
            await self.redis.drop_connections()

    def forget_credentials(self) -> None:
        if self.redis is not None:
            self.redis.forget_credentials()  # the cache's IAM token


def iam_auth(settings: Settings) -> IamAuth | None:
    """ElastiCache's IAM authentication, when REDIS_IAM_USER names the user."""
    if settings.redis_iam_user is None:
        return None
    from orchestrator_flows.kv.iam_auth import IamAuth

    assert settings.redis_cache_name is not None
    assert settings.aws_region is not None
    return IamAuth(cache_name=settings.redis_cache_name, user_id=settings.redis_iam_user,
                   region=settings.aws_region)


@dataclass(slots=True)
class Archives:
    """The archive (ARCHIVE_TABLE), opened on first use: boto3 is imported only by a process
    that reads or writes it, never at the cold start of one that does not."""

    table: str | None
    retention_days: int
    opened: Archive | None = None

    def get(self) -> Archive | None:
        if self.opened is None and self.table is not None:
            from orchestrator_flows.archive.store import open_archive

            self.opened = open_archive(self.table, self.retention_days)
        return self.opened


@dataclass(frozen=True, slots=True, kw_only=True)
class Runtime:
    settings: Settings
    storage: Storage
    store: SessionStore
    observer: Observer
    orchestrator: Orchestrator | None  # None where no turn is routed (read-only functions)
    agents: AgentCaller | None
    archives: Archives

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        route_turns: bool = True,
        storage: Storage | None = None,
        agents: AgentCaller | None = None,
        observer: Observer | None = None,
        archive: Archive | None = None,
    ) -> Runtime:
        """Everything, from `settings`; `storage`, `agents` and `observer` replace the defaults
        (Redis or embedded, the A2A client, silence). A broken flow file fails here."""
        storage = storage or Storage.of(settings)
        observer = observer or SilentObserver()
        store = SessionStore(backend=storage.calls, ttl_seconds=settings.session_ttl_seconds,
                             lease_seconds=settings.claim_lease_seconds,
                             archive_index=storage.archive_index(settings),
                             archive_idle_seconds=settings.archive_idle_seconds)
        orchestrator = None
        if route_turns:
            from orchestrator_flows.breaker import Breakers
            from orchestrator_flows.engine import Orchestrator

            if agents is None:
                from orchestrator_flows.a2a import A2AClient
                from orchestrator_flows.a2a.credentials import PowertoolsSecrets

                agents = A2AClient(
                    timeout_seconds=settings.agent_timeout_seconds,
                    secrets=PowertoolsSecrets(settings.agent_secrets_max_age_seconds),
                    on_unmet_auth=observer.agent_auth_unmet)
            orchestrator = Orchestrator(
                flow=settings.load_flow(),
                store=store,
                agents=agents,
                breakers=Breakers(store=storage.breakers,
                                  probe_seconds=settings.breaker_probe_seconds),
                observer=observer,
                max_steps=settings.max_steps_per_call,
                turn_wait_seconds=settings.turn_wait_seconds,
                agent_timeout_seconds=settings.agent_timeout_seconds,
            )
        return cls(settings=settings, storage=storage, store=store, observer=observer,
                   orchestrator=orchestrator, agents=agents,
                   archives=Archives(settings.archive_table, settings.retention_days, archive))

    @property
    def turns(self) -> Orchestrator:
        if self.orchestrator is None:
            raise RuntimeError("this runtime was built without turns (route_turns=False)")
        return self.orchestrator

    async def drop_connections(self) -> None:
        """Close every pooled connection (Redis, the agents', the token endpoints'); each
        client opens new ones on first use. Before a SnapStart snapshot (snapshot.py)."""
        close = getattr(self.agents, "aclose", None)  # the A2A client stays usable after it
        if close is not None:
            await close()
        await self.storage.drop_connections()

    def forget_credentials(self) -> None:
        """Forget every credential kept in memory, and the clients built with them: each is
        read again on first use. After a SnapStart restore (snapshot.py)."""
        forget = getattr(self.agents, "forget_credentials", None)
        if forget is not None:
            forget()
        self.archives.opened = None  # its boto3 resource holds the init's credentials
        self.storage.forget_credentials()

    async def aclose(self) -> None:
        close = getattr(self.agents, "aclose", None)
        try:
            if close is not None:
                await close()
        finally:
            await self.storage.close()


# Container objects allocated between two collections of the young generation (CPython's
# default is 700). A collection scans the turns in flight, whatever the count, so at 700 it ran
# several times a step, scanning the same live turns, and the collector cost 3 % of a step's
# instructions at concurrency 8 (bench/INSTRUCTIONS.md); at 10,000 that is about a tenth. The
# cyclic garbage a collection lets wait is bounded by the same count: a few MB at most.
YOUNG_COLLECTION_THRESHOLD = 10_000


def tune_collector() -> None:
    """Called once the process has built what it serves with: everything alive then (modules,
    the app, the flow, the clients) lives as long as the process, so it is moved out of the
    cyclic collector's sight, and the collector's full passes scan only what turns create.
    Without it those passes over the whole start-up heap were the p99 of a busy `serve`
    (bench/RESULTS.md: p99 at 32 concurrent turns about 70 ms, with it about 42 ms). Then the
    young generation is collected every YOUNG_COLLECTION_THRESHOLD allocations, not every 700.

    No collection first: over a Lambda's init heap one took 14-22 ms of the cold start, and
    what cyclic garbage the start-up left is kept, once, for the process's life."""
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)
