"""One Redis (or Redis Cluster) client per process, and the one way to use it: `run`, which
keeps a call within its deadline, queues a burst for a connection instead of failing it, and
turns every way Redis can fail into the domain's StoreUnavailable (translated at the edge)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.retry import Retry

from orchestrator_flows.errors import StoreUnavailable
from orchestrator_flows.timeouts import deadline_at

if TYPE_CHECKING:
    from orchestrator_flows.kv.iam_auth import IamAuth

T = TypeVar("T")

# Every failure to reach Redis, whatever its form, is the domain's StoreUnavailable.
_UNAVAILABLE = (redis_errors.RedisError, OSError, asyncio.TimeoutError)
# A connection found dead: after a Redis restart, every idle pooled connection is.
_DEAD_CONNECTION = (redis_errors.ConnectionError, ConnectionError)


class _PackedInC:
    """Commands packed by hiredis' C packer. redis-py's own asyncio connection packs them in
    Python, encoding each argument through a chain of type checks: for the session store's
    scripts (a dozen arguments each) that was about a sixth of a step's Redis client work,
    counted in instructions (bench/RESULTS.md). redis-py's synchronous client packs with
    hiredis the same way when it is installed."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        # A command name with a space ('SCRIPT LOAD') is several arguments on the wire.
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            # bytearray and memoryview, which hiredis does not take; and what Redis cannot be
            # sent (None, a bool), which redis-py's packer refuses as DataError
            return AbstractConnection.pack_command(self, *args)  # type: ignore[arg-type]


class _LeanConnection(_PackedInC, Connection):
    pass


class _LeanSSLConnection(_PackedInC, SSLConnection):
    pass


_LEAN: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _LeanConnection, SSLConnection: _LeanSSLConnection}


Arg = str | int | float


class Script(Protocol):
    """A Lua script, run with its keys and arguments: one round trip."""

    async def __call__(self, *, keys: Sequence[str], args: Sequence[Arg]) -> Any: ...


class _PooledScript:
    """A Lua script on a standalone Redis, sent on a pooled connection of redis-py's: one
    EVALSHA, and SCRIPT LOAD first on a NOSCRIPT (a Redis restarted, or flushed).

    redis-py's own command path (its retry wrapper, which is set to no retries here, its
    OpenTelemetry recorder and event dispatch, the script object's own checks) cost more CPU
    per step than the two commands' sending and reading. Failures stay redis-py's: a
    connection that fails or is cancelled mid-reply is dropped by redis-py's connection
    itself, and the pool and its health checks are redis-py's."""

    def __init__(self, client: Redis, lua: str) -> None:
        self.pool = client.connection_pool
        self.lua = lua
        self.sha = hashlib.sha1(lua.encode()).hexdigest()

    async def __call__(self, *, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        connection: AbstractConnection = await self.pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            command = connection.pack_command("EVALSHA", self.sha, len(keys), *keys, *args)
            await connection.send_packed_command(command)
            try:
                return await connection.read_response()
            except redis_errors.NoScriptError:
                await connection.send_packed_command(
                    connection.pack_command("SCRIPT LOAD", self.lua))
                await connection.read_response()
                await connection.send_packed_command(command)
                return await connection.read_response()
        finally:
            await self.pool.release(connection)


class _ClusterScript:
    """On Redis Cluster, redis-py's script object: it sends to the node of the keys' slot and
    follows MOVED and ASK."""

    def __init__(self, script: AsyncScript) -> None:
        self._script = script

    async def __call__(self, *, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return await self._script(keys=list(keys), args=list(args))


class RedisConnection:
    def __init__(
        self, client: Redis | RedisCluster, *, deadline_seconds: float, max_connections: int,
        credentials: IamAuth | None = None,
    ) -> None:
        self.client = client
        self.credentials = credentials
        self.name = "redis-cluster" if isinstance(client, RedisCluster) else "redis"
        self.deadline_seconds = deadline_seconds
        self._ready = not isinstance(client, RedisCluster)
        self._ready_lock = asyncio.Lock()
        # redis-py's pools raise instead of waiting when every connection is busy; queue here,
        # inside the deadline, so a burst waits its turn rather than failing. A quarter of the
        # connections (at least one, if there are two) may block listening for a wake-up
        # (BLPOP); the rest are never taken by a listener, so commits and claims do not wait
        # behind turns that wait.
        self.listeners = max_connections // 4 or (1 if max_connections > 1 else 0)
        self._slots = asyncio.Semaphore(max_connections - self.listeners)
        self._listening = asyncio.Semaphore(self.listeners) if self.listeners else None

    def script(self, lua: str) -> Script:
        """A Lua script registered once: sent by EVALSHA, loaded on first NOSCRIPT."""
        if isinstance(self.client, RedisCluster):
            return _ClusterScript(self.client.register_script(lua))
        return _PooledScript(self.client, lua)

    async def run(
        self, what: str, call: Callable[[], Awaitable[T]], *, resend: bool = True,
        deadline: float | None = None,
    ) -> T:
        """One primitive within the deadline (the loop's time; by default deadline_seconds
        from now). A dead connection drops the pool's idle ones and, where the primitive is
        safe to send twice, sends it once more on a fresh connection."""
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.deadline_seconds
        try:
            async with deadline_at(deadline), self._slots:
                if not self._ready:
                    await self._ensure_ready()
                try:
                    return await call()
                except _DEAD_CONNECTION:
                    await self._drop_idle_connections()
                    if not resend:
                        raise
                    return await call()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"session store unavailable during {what}: {type(exc).__name__}: {exc}"
            ) from exc

    async def listen(
        self, what: str, call: Callable[[], Awaitable[T]], *, deadline: float
    ) -> T | None:
        """A blocking call (BLPOP) on a listening connection, within the deadline; None at
        once when this connection keeps none (one connection in all)."""
        if self._listening is None:
            await asyncio.sleep(max(0.0, min(0.1, deadline - asyncio.get_running_loop().time())))
            return None
        try:
            async with deadline_at(deadline), self._listening:
                if not self._ready:
                    await self._ensure_ready()
                return await call()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"session store unavailable during {what}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _ensure_ready(self) -> None:
        # redis-py's cluster client discovers the slots on first use; concurrent first commands
        # each start that discovery and close one another's connections. Do it once, first.
        async with self._ready_lock:
            if not self._ready:
                assert isinstance(self.client, RedisCluster)
                await self.client.initialize()
                self._ready = True

    async def _drop_idle_connections(self) -> None:
        if isinstance(self.client, Redis):
            await self.client.connection_pool.disconnect(inuse_connections=False)
        # redis-py's cluster client rebuilds its node connections itself after a failure.

    async def drop_connections(self) -> None:
        """Close every connection, idle or not (nothing may be in flight); the next call opens
        new ones. Before a SnapStart snapshot: no socket survives one."""
        if isinstance(self.client, RedisCluster):
            await self.client.aclose()  # the next command finds the cluster's nodes again
            self._ready = False
        else:
            await self.client.connection_pool.disconnect()

    def forget_credentials(self) -> None:
        if self.credentials is not None:
            self.credentials.forget()

    async def close(self) -> None:
        await self.client.aclose()


def connect(
    url: str,
    mode: Literal["standalone", "cluster"],
    *,
    socket_timeout: float,
    connect_timeout: float,
    max_connections: int,
    ca_certs: str | None = None,
    credential_provider: IamAuth | None = None,
) -> RedisConnection:
    """Build the client lazily (no I/O here): connections open on first use, on the running loop.

    No automatic retries: a retried commit whose first try did run would be misreported as a
    lost claim, and a dead Redis must answer 503 within the deadline, not after backoffs.
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "max_connections": max_connections,
        "health_check_interval": 30,
    }
    if ca_certs:
        options["ssl_ca_certs"] = ca_certs
    if credential_provider is not None:  # asked for at each connection's AUTH
        options["credential_provider"] = credential_provider
    client: Redis | RedisCluster
    if mode == "cluster":
        options.pop("health_check_interval")
        client = RedisCluster.from_url(url, **options)
    else:
        # Every call runs within `run`'s deadline, which `socket_timeout` sizes and which
        # drops the connection when it fires mid-reply (redis-py disconnects on any
        # exception in a read). A socket timeout of redis-py's own would only add a task per
        # command sent (its `wait_for`) and a timeout scope per reply. The cluster client
        # keeps it: it reacts to a socket timeout by finding the cluster's nodes again.
        client = Redis.from_url(url, **{**options, "socket_timeout": None})
        pool = client.connection_pool
        # The pool opens its connections on first use, with the class chosen from the URL.
        pool.connection_class = _LEAN.get(pool.connection_class, pool.connection_class)
    # A store call may need a connect plus a reply; past that it is unavailable, not slow.
    return RedisConnection(
        client,
        deadline_seconds=min(1.9, connect_timeout + 2 * socket_timeout),
        max_connections=max_connections,
        credentials=credential_provider,
    )
