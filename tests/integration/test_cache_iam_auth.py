"""The store as ElastiCache's IAM user, against a real redis-server that requires it: the user
holds exactly the stack's access string, its password is the token signed for the clock's
time, and a connection opened after the token's renewal authenticates with the new one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
import redis

from infra.cache import ACCESS_STRING
from orchestrator_flows import snapshot
from orchestrator_flows.breaker.redis_store import RedisBreakerStore
from orchestrator_flows.errors import StoreUnavailable
from orchestrator_flows.kv.iam_auth import AwsCredentials, IamAuth, presign_connect
from orchestrator_flows.kv.redis_connection import connect
from orchestrator_flows.runtime import Runtime, Storage
from orchestrator_flows.settings import Settings
from orchestrator_flows.store.redis_backend import RedisBackend
from tests.support.redis_servers import RedisProcess, start_cluster, start_standalone
from tests.support.scripted import ScriptedAgents, turn

CREDENTIALS = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "token")
AT = datetime(2026, 12, 5, 9, 30, 0, tzinfo=UTC)
USER, CACHE, REGION = "orchestrator-flows-dev", "of-dev-1234abcd", "eu-west-1"


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisProcess,
                                                                       redis.Redis]]:
    """A private redis-server whose default user is off: only named users get in."""
    server = start_standalone(Path(tmp_path_factory.mktemp("acl")))
    setup = redis.Redis(port=server.port)
    command(setup, "ACL", "SETUSER", "admin", "on", ">admin-secret", "~*", "&*", "+@all")
    command(setup, "ACL", "SETUSER", "default", "off")
    setup.close()
    admin = redis.Redis(port=server.port, username="admin", password="admin-secret")
    yield server, admin
    admin.close()
    server.stop()


def command(client: redis.Redis, *args: str) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def as_user(url: str, auth: IamAuth, mode: Literal["standalone", "cluster"]) -> Runtime:
    """A runtime whose store connects as the IAM user, with `auth` signing its tokens."""
    connection = connect(url, mode, socket_timeout=1.0, connect_timeout=1.0, max_connections=8,
                         credential_provider=auth)
    return Runtime.build(Settings(redis_url=url, redis_mode=mode),
                         storage=Storage(RedisBackend(connection), RedisBreakerStore(connection)),
                         agents=ScriptedAgents())


def token_at(at: datetime) -> str:
    return presign_connect(cache_name=CACHE, user_id=USER, region=REGION,
                           credentials=CREDENTIALS, at=at)


def only_token(admin: redis.Redis, token: str) -> None:
    """The user as the stack defines it, whose one password is `token` (as ElastiCache takes
    only a token that is valid now)."""
    command(admin, "ACL", "SETUSER", USER, "reset", *ACCESS_STRING.split(), f">{token}")


async def test_the_store_runs_as_the_iam_user_and_renews_its_token(
        locked: tuple[RedisProcess, redis.Redis]) -> None:
    server, admin = locked
    now = [AT.timestamp()]
    auth = IamAuth(cache_name=CACHE, user_id=USER, region=REGION,
                   credentials=lambda: CREDENTIALS, clock=lambda: now[0])
    only_token(admin, token_at(AT))
    runtime = as_user(server.url, auth, "standalone")
    try:
        # A whole call under the access string: claims, commits, scripts, breakers, reads.
        for intent in ("greeting", "verify_identity"):
            reply = await runtime.turns.handle_turn(turn(intent, call="IAM-1"))
            assert reply.status == "success", reply
        assert await runtime.store.get("IAM-1") is not None
        assert {entry["user"] for entry in admin.client_list()} >= {USER}

        # Eleven minutes on, the token is renewed; the server takes only the new one. Open
        # connections stay (as on ElastiCache) until cut, as ElastiCache cuts them at 12 h.
        later = AT + timedelta(minutes=11)
        now[0] = later.timestamp()
        only_token(admin, token_at(later))
        command(admin, "CLIENT", "KILL", "USER", USER)
        reply = await runtime.turns.handle_turn(turn("small_talk", call="IAM-1"))
        assert reply.status == "success", reply
        assert any(entry["user"] == USER for entry in admin.client_list())
    finally:
        await runtime.aclose()


async def test_a_token_the_server_does_not_take_is_store_unavailable(
        locked: tuple[RedisProcess, redis.Redis]) -> None:
    server, admin = locked
    only_token(admin, token_at(AT))
    stale = IamAuth(cache_name=CACHE, user_id=USER, region=REGION,
                    credentials=lambda: CREDENTIALS,
                    clock=lambda: (AT + timedelta(minutes=30)).timestamp())
    runtime = as_user(server.url, stale, "standalone")
    try:
        with pytest.raises(StoreUnavailable):
            await runtime.store.get("IAM-2")
    finally:
        await runtime.aclose()


async def test_credentials_that_cannot_be_had_are_store_unavailable_not_a_crash(
        locked: tuple[RedisProcess, redis.Redis]) -> None:
    server, _ = locked

    def none() -> AwsCredentials:
        raise RuntimeError("no AWS credentials")

    auth = IamAuth(cache_name=CACHE, user_id=USER, region=REGION, credentials=none)
    runtime = as_user(server.url, auth, "standalone")
    try:
        with pytest.raises(StoreUnavailable, match="no credentials to sign"):
            await runtime.store.get("IAM-3")
    finally:
        await runtime.aclose()


async def test_on_a_cluster_every_node_s_connections_authenticate_with_the_current_token(
        tmp_path: Path) -> None:
    """As deployed: ElastiCache Serverless is reached in cluster mode, where redis-py opens
    connections to each node itself (and again after a node's connections are cut)."""
    cluster = start_cluster(tmp_path)
    admins = []
    try:
        for node in cluster.nodes:
            setup = redis.Redis(port=node.port)
            command(setup, "ACL", "SETUSER", "admin", "on", ">admin-secret", "~*", "&*", "+@all")
            command(setup, "ACL", "SETUSER", "default", "off")
            setup.close()
            admins.append(redis.Redis(port=node.port, username="admin", password="admin-secret"))
        now = [AT.timestamp()]
        for admin in admins:
            only_token(admin, token_at(AT))
        auth = IamAuth(cache_name=CACHE, user_id=USER, region=REGION,
                       credentials=lambda: CREDENTIALS, clock=lambda: now[0])
        runtime = as_user(cluster.url, auth, "cluster")
        try:
            calls = [f"IAM-C{i}" for i in range(6)]  # spread over the three nodes' slots
            for call in calls:
                assert (await runtime.turns.handle_turn(turn("greeting", call=call))
                        ).status == "success"
            later = AT + timedelta(minutes=11)
            now[0] = later.timestamp()
            for admin in admins:
                only_token(admin, token_at(later))
                command(admin, "CLIENT", "KILL", "USER", USER)
            for call in calls:
                assert (await runtime.turns.handle_turn(turn("verify_identity", call=call))
                        ).status == "success"
            assert sum(entry["user"] == USER for admin in admins
                       for entry in admin.client_list()) >= len(admins)
        finally:
            await runtime.aclose()
    finally:
        for admin in admins:
            admin.close()
        cluster.stop()


class InitCredentials:
    """Credentials as a chain resolves them: once, kept until forgotten (ChainCredentials'
    shape); `now` is what the environment would give if asked again."""

    def __init__(self, now: AwsCredentials) -> None:
        self.now = now
        self.kept: AwsCredentials | None = None

    def __call__(self) -> AwsCredentials:
        if self.kept is None:
            self.kept = self.now
        return self.kept

    def forget(self) -> None:
        self.kept = None


async def test_after_a_snapstart_restore_the_token_is_signed_with_the_restored_credentials(
        locked: tuple[RedisProcess, redis.Redis]) -> None:
    """A snapshot holds the init's credentials and the token they signed; the environment
    restored from it has credentials of its own, which the cache's IAM check wants. The
    after-restore hook drops both: the next connection signs with the new credentials."""
    server, admin = locked
    source = InitCredentials(CREDENTIALS)
    now = [AT.timestamp()]
    auth = IamAuth(cache_name=CACHE, user_id=USER, region=REGION, credentials=source,
                   clock=lambda: now[0])
    only_token(admin, token_at(AT))
    runtime = as_user(server.url, auth, "standalone")
    try:
        await runtime.store.get("IAM-SNAP")  # the init opened a connection
        await runtime.drop_connections()  # before_snapshot's work, on this (running) loop
        restored = AwsCredentials("AKIDRESTORED", "restored-secret", "restored-token")
        source.now = restored
        now[0] += 120  # restored two minutes on: the kept token has not reached its renewal
        only_token(admin, presign_connect(cache_name=CACHE, user_id=USER, region=REGION,
                                          credentials=restored, at=AT + timedelta(minutes=2)))
        with pytest.raises(StoreUnavailable):  # the kept token, signed by the init's
            await runtime.store.get("IAM-SNAP")
        snapshot.after_restore(runtime)
        assert await runtime.store.get("IAM-SNAP") is None  # authenticated, nothing stored
    finally:
        await runtime.aclose()
