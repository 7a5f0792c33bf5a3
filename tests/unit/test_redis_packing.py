"""Commands packed by hiredis (kv/redis_connection.py) are byte for byte what redis-py's own
packer sends, and what redis-py refuses is still refused."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.exceptions import DataError

from orchestrator_flows.kv.redis_connection import connect

COMMANDS: list[tuple[Any, ...]] = [
    ("EVALSHA", "0" * 40, 5, "of:{C-1}:claim", "tok", 15000, "", 1764100000000),
    ("SCRIPT LOAD", "return redis.call('GET', KEYS[1])"),  # a name that is two words
    (b"CONFIG GET", b"maxmemory"),
    ("HSET", "k", "session", '{"text":"ключ ✓ 😀"}', "n", -12, "f", 1.5),
    ("SET", "big", "x" * 200_000),  # past redis-py's buffer cutoff, which it chunks
    ("SET", b"raw", b"\x00\xff\r\n"),
    ("SET", "k", bytearray(b"ba")),
    ("SET", "k", memoryview(b"mv")),
]


def lean_connection(url: str = "redis://127.0.0.1:1") -> AbstractConnection:
    client = connect(url, "standalone", socket_timeout=1, connect_timeout=1, max_connections=2)
    pool = client.client.connection_pool  # type: ignore[union-attr]
    connection: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
    return connection


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_a_command_is_packed_as_redis_py_packs_it(command: tuple[Any, ...]) -> None:
    ours = lean_connection()
    theirs = Connection(host="127.0.0.1", port=1)
    assert type(ours) is not Connection
    assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command))


@pytest.mark.parametrize("value", [None, True])
def test_what_redis_py_refuses_is_refused(value: Any) -> None:
    with pytest.raises(DataError):
        lean_connection().pack_command("SET", "k", value)


def test_a_tls_url_keeps_tls_with_the_c_packer() -> None:
    connection = lean_connection("rediss://127.0.0.1:1")
    assert isinstance(connection, SSLConnection)
    assert b"".join(connection.pack_command("PING")) == b"*1\r\n$4\r\nPING\r\n"
