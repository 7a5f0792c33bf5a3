"""The A2A client's own HTTP transport against real sockets: a small asyncio server on loopback
that answers as a test tells it, and counts the connections it accepts."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from orchestrator_flows.a2a.transport import LeanTransport
from tests.support.redis_servers import _make_tls_material

# Request head and body -> the raw answer (or its parts, sent apart), or None to close.
Handler = Callable[[bytes], Awaitable[bytes | list[bytes] | None]]


class ThenClose(bytes):
    """A raw answer after which the server closes the connection."""


def answer(body: bytes, *headers: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"".join(b"\r\n" + h for h in headers)
            + b"\r\n\r\n" + body)


@dataclass
class Server:
    url: str
    accepted: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> Server:
        state = Server("")

        async def connection(reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
            state.accepted += 1
            state.writers.append(writer)
            try:
                while True:
                    raw = await handler(await read_request(reader))
                    if raw is None:
                        break
                    for part in raw if isinstance(raw, list) else [raw]:
                        writer.write(part)
                        await writer.drain()
                        if isinstance(raw, list):
                            await asyncio.sleep(0.05)  # each part in a read of its own
                    if isinstance(raw, ThenClose):
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()

        server = await asyncio.start_server(connection, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        scheme = "https" if tls else "http"
        state.url = f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        return state

    yield start
    for server in servers:
        server.close()


async def test_answers_are_read_over_one_kept_alive_connection(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def handler(request: bytes) -> bytes:
        return answer(b'{"echo": ' + str(len(request)).encode() + b"}")

    server = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        replies = [await client.post(server.url, content=b"x" * n) for n in (1, 2, 3)]
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert len({r.json()["echo"] for r in replies}) == 3
    assert server.accepted == 1


async def test_a_connection_the_agent_closed_while_idle_is_replaced_without_an_error(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def handler(request: bytes) -> bytes:
        return answer(b"{}")

    server = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        assert (await client.post(server.url, content=b"{}")).status_code == 200
        for writer in server.writers:  # the agent's keep-alive ran out
            writer.close()
        await asyncio.sleep(0.05)
        assert (await client.post(server.url, content=b"{}")).status_code == 200
    assert server.accepted == 2


async def test_an_idle_connection_past_its_keepalive_is_not_reused(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def handler(request: bytes) -> bytes:
        return answer(b"{}")

    server = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport(keepalive_seconds=0.05)) as client:
        await client.post(server.url, content=b"{}")
        await asyncio.sleep(0.1)
        await client.post(server.url, content=b"{}")
    assert server.accepted == 2


async def test_a_chunked_answer_is_decoded(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def handler(request: bytes) -> bytes:
        return (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b"5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")

    server = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        assert (await client.post(server.url, content=b"{}")).json() == {"a": 1}


async def test_an_answer_past_the_cap_is_cut_and_its_connection_dropped(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def handler(request: bytes) -> bytes:
        return (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                + (b"400\r\n" + b"x" * 1024 + b"\r\n") * 8 + b"0\r\n\r\n")

    server = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport(max_body_bytes=2000)) as client:
        cut = await client.post(server.url, content=b"{}")
        assert 2000 < len(cut.content) < 8 * 1024
        await client.post(server.url, content=b"{}")
    assert server.accepted == 2


async def test_a_fresh_connection_closed_without_an_answer_is_a_protocol_error(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def handler(request: bytes) -> None:
        return None

    server = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(server.url, content=b"{}")


async def test_an_agent_that_does_not_answer_times_out_as_a_read_timeout(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def handler(request: bytes) -> bytes:
        await asyncio.sleep(5)
        return answer(b"{}")

    server = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(server.url, content=b"{}")


async def test_nobody_listening_is_a_connect_error() -> None:
    from tests.support.redis_servers import free_port

    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{free_port()}/", content=b"{}")


async def test_an_https_agent_is_verified_against_the_trusted_authorities(
    serve: Callable[..., Awaitable[Server]], tmp_path: Path
) -> None:
    ca, cert, key = _make_tls_material(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def handler(request: bytes) -> bytes:
        return answer(b'{"over": "tls"}')

    server = await serve(handler, tls)
    trusting = ssl.create_default_context(cafile=str(ca))
    async with httpx.AsyncClient(transport=LeanTransport(ssl_context=trusting)) as client:
        assert (await client.post(server.url, content=b"{}")).json() == {"over": "tls"}
        assert (await client.post(server.url, content=b"{}")).status_code == 200
    assert server.accepted == 1
    async with httpx.AsyncClient(transport=LeanTransport()) as client:  # certifi's CAs only
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.post(server.url, content=b"{}")


async def test_an_answer_delimited_by_the_close_is_read_whole(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def handler(request: bytes) -> bytes:
        return ThenClose(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n'
                         b'{"closed": true}')

    server = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        assert (await client.post(server.url, content=b"{}")).json() == {"closed": True}
        assert (await client.post(server.url, content=b"{}")).json() == {"closed": True}
    assert server.accepted == 2  # such an answer ends its connection


async def test_an_answer_cut_before_its_length_is_a_protocol_error(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def handler(request: bytes) -> bytes:
        return ThenClose(answer(b'{"long": "answer"}')[:-5])

    server = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="cut short"):
            await client.post(server.url, content=b"{}")


async def test_an_answer_compressed_unasked_is_decoded_by_the_a2a_client(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    """The client asks for no compression; an agent that gzips its answer anyway is still
    read, and the cap applies to what it decodes to."""
    import gzip
    import json

    from orchestrator_flows.a2a import A2AClient, AgentRequest
    from orchestrator_flows.errors import AgentFailure, FailureCode
    from orchestrator_flows.flow import Agent

    seen: list[bytes] = []

    async def handler(request: bytes) -> bytes:
        seen.append(request)
        rpc_id = json.loads(request.split(b"\r\n\r\n", 1)[1])["id"]
        text = "x" * int(request.split(b'"text":"', 1)[1].split(b'"', 1)[0] or 1)
        result = {"jsonrpc": "2.0", "id": rpc_id, "result": {"message": {
            "role": "ROLE_AGENT", "parts": [{"text": text}]}}}
        return answer(gzip.compress(json.dumps(result).encode()), b"content-encoding: gzip")

    server = await serve(handler)
    client = A2AClient(timeout_seconds=5, max_body_bytes=20_000)
    agent = Agent("gzip", server.url, "1.0")
    try:
        reply = await client.send(AgentRequest(agent, "12", {}, "ctx-1"))
        with pytest.raises(AgentFailure) as too_large:  # 30,000 x's squeeze into a few bytes
            await client.send(AgentRequest(agent, "30000", {}, "ctx-1"))
    finally:
        await client.aclose()
    assert reply.text == "x" * 12
    assert b"accept-encoding" not in seen[0].lower()
    assert too_large.value.code is FailureCode.RESPONSE_TOO_LARGE


async def test_a_compressed_answer_is_inflated_no_further_than_the_cap(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    """16 MiB of spaces gzip to 16 KiB, under a 20,000-byte cap: refused as too large having
    inflated just past the cap, not all of it."""
    import gzip
    import tracemalloc

    from orchestrator_flows.a2a import A2AClient, AgentRequest
    from orchestrator_flows.errors import AgentFailure, FailureCode
    from orchestrator_flows.flow import Agent, RetryPolicy

    bomb = gzip.compress(b" " * (16 << 20))
    assert len(bomb) < 20_000

    async def handler(request: bytes) -> bytes:
        return answer(bomb, b"content-encoding: gzip")

    server = await serve(handler)
    client = A2AClient(timeout_seconds=5, max_body_bytes=20_000)
    agent = Agent("gzip", server.url, "1.0", RetryPolicy(attempts=1))
    tracemalloc.start()
    try:
        with pytest.raises(AgentFailure) as too_large:
            await client.send(AgentRequest(agent, "hi", {}, "ctx-1"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await client.aclose()
    assert too_large.value.code is FailureCode.RESPONSE_TOO_LARGE
    assert peak < 4 << 20


async def test_an_interim_answer_is_passed_over_and_the_connection_kept_in_step(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    """103 Early Hints before each answer: each request gets its own answer, over one
    connection (an interim answer taken for the answer would leave the real one queued for
    the next request)."""
    answered = 0

    async def handler(request: bytes) -> list[bytes]:
        nonlocal answered
        answered += 1
        return [b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n",
                answer(b'{"n": %d}' % answered)]

    server = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        replies = [(await client.post(server.url, content=b"{}")).json() for _ in range(3)]
        streamed = await client.send(client.build_request(
            "POST", server.url, content=b"{}", extensions={"stream": True}), stream=True)
        await streamed.aread()
    assert replies == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert (streamed.status_code, streamed.json()) == (200, {"n": 4})
    assert server.accepted == 1


async def test_an_answer_switching_protocols_is_a_protocol_error(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def handler(request: bytes) -> bytes:
        return ThenClose(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                         b"connection: upgrade\r\n\r\n")

    server = await serve(handler)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(server.url, content=b"{}")


@dataclass
class StreamingServer:
    """Answers each request with a chunked head and a first chunk at once, and the rest only
    once `go` is set; tells when a connection was closed by the client."""

    url: str = ""
    accepted: int = 0
    go: asyncio.Event = field(default_factory=asyncio.Event)
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)

    async def connection(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while True:
                await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n8\r\ndata: 1\n\r\n")
                await writer.drain()
                waiting = asyncio.ensure_future(self.go.wait())
                gone = asyncio.ensure_future(reader.read(1))
                done, _ = await asyncio.wait({waiting, gone},
                                             return_when=asyncio.FIRST_COMPLETED)
                if gone in done:
                    waiting.cancel()
                    self.closed_by_client.set()
                    return
                gone.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gone  # no longer waiting on the reader
                writer.write(b"9\r\n\ndata: 2\n\r\n0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client.set()
        finally:
            writer.close()


@pytest.fixture
async def streaming_server() -> AsyncIterator[StreamingServer]:
    state = StreamingServer()
    server = await asyncio.start_server(state.connection, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    yield state
    server.close()


async def test_a_streamed_answer_arrives_as_sent_and_its_connection_is_kept(
    streaming_server: StreamingServer,
) -> None:
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        for _ in range(2):
            streaming_server.go.clear()
            async with client.stream("POST", streaming_server.url, content=b"{}",
                                     extensions={"stream": True}) as response:
                chunks = response.aiter_raw()
                assert await anext(chunks) == b"data: 1\n"  # before the rest is even sent
                streaming_server.go.set()
                assert b"".join([chunk async for chunk in chunks]) == b"\ndata: 2\n"
    assert streaming_server.accepted == 1


async def test_a_streamed_answer_left_before_its_end_closes_its_connection(
    streaming_server: StreamingServer,
) -> None:
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        async with client.stream("POST", streaming_server.url, content=b"{}",
                                 extensions={"stream": True}) as response:
            assert await anext(response.aiter_raw()) == b"data: 1\n"
        await asyncio.wait_for(streaming_server.closed_by_client.wait(), 5)
        streaming_server.go.set()
        async with client.stream("POST", streaming_server.url, content=b"{}",
                                 extensions={"stream": True}) as response:
            assert await response.aread() == b"data: 1\n\ndata: 2\n"
    assert streaming_server.accepted == 2
