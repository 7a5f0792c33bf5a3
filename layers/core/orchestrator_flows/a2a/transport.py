"""A lean HTTP/1.1 transport for httpx: asyncio streams and httptools' C parser, keep-alive
connections pooled per origin. The A2A client's hop is most of a step's CPU; httpx's default
transport (httpcore, anyio, h11) spends about 0.5 ms of CPU a call on loopback, this one about a
third of that (bench/RESULTS.md). It keeps httpx's transport API (`httpx.Request` in,
`httpx.Response` out, httpx's exceptions), which the A2A client calls directly.

What an agent call needs and no more: one request at a time per connection, the body read whole
(the A2A client caps it: past `max_body_bytes` the connection is dropped and the answer is cut
there, which the client reports as too large), keep-alive until `keepalive_seconds` idle, TLS
through an `ssl.SSLContext` (a request's own, for a client certificate, in its `ssl_context`
extension; its connections are pooled apart). Concurrency is bounded above it, by the A2A
client's queue. Failures are httpx's own exceptions, so the client maps them as before.

A request with the `stream` extension set (a streaming agent's Server-Sent Events) gets its
response as soon as the head is in, and its body as it arrives (`LiveBody`), with the same cap.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httptools
import httpx

READ_SIZE = 65_536
# An answer httptools cannot parse, or one switching protocols (101, which no agent may send).
_PARSER_ERRORS = (httptools.HttpParserError, httptools.HttpParserUpgrade)
# Where a connection goes, and with which client certificate (None: the transport's context).
_Origin = tuple[str, str, int, ssl.SSLContext | None]


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = field(default_factory=time.monotonic)

    def usable(self, keepalive_seconds: float) -> bool:
        return (not self.reader.at_eof() and not self.writer.is_closing()
                and time.monotonic() - self.idle_since < keepalive_seconds)

    def close(self) -> None:
        self.writer.close()


class ReadBody(httpx.AsyncByteStream):
    """An answer's body, read whole by the transport: the A2A client takes `body` as it is
    (no chunking, no decoder) unless `encoded` says the agent compressed it anyway."""

    def __init__(self, body: bytes, encoded: bool) -> None:
        self.body = body
        self.encoded = encoded

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body


class LiveBody(httpx.AsyncByteStream):
    """An answer's body read as it arrives, for a streamed answer: the connection goes back to
    the pool once the body has ended, and is closed if the body is left before its end."""

    def __init__(self, transport: LeanTransport, connection: _Connection, origin: _Origin,
                 answer: _Answer) -> None:
        self._transport = transport
        self._connection = connection
        self._origin = origin
        self._answer = answer
        self._open = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        answer = self._answer
        assert answer.parser is not None
        while True:
            if answer.body:
                # What one read brought, as one chunk: an agent sending tiny HTTP chunks
                # costs no more per byte than one sending large ones.
                chunks, answer.body = answer.body, []
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if answer.finished():
                break
            try:
                data = await self._connection.reader.read(READ_SIZE)
                if not data:
                    if not answer.delimited_by_close():
                        raise httpx.RemoteProtocolError("the answer was cut short")
                    answer.complete = True
                    continue
                answer.parser.feed_data(data)
            except _PARSER_ERRORS as exc:
                raise httpx.RemoteProtocolError(f"not an HTTP answer: {exc!r}") from None
            except OSError as exc:
                raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from None
        self._transport._release(self._connection, self._origin, answer)
        self._open = False

    async def aclose(self) -> None:
        if self._open:  # left mid-body: the connection is in an unknown state
            self._open = False
            self._connection.close()


class _Answer:
    """httptools' callbacks, collecting one response."""

    def __init__(self, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.complete = False
        self.cut = False
        self.received = False  # any byte of it
        self.encoded = False  # compressed (a Content-Encoding other than identity)
        self.keep_alive = False
        self.headers_done = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if name.lower() == b"content-encoding" and value.strip().lower() != b"identity":
            self.encoded = True

    def on_body(self, body: bytes) -> None:
        if self.cut:
            return
        self.size += len(body)
        if self.size > self.max_body_bytes:
            self.cut = True  # kept up to just past the cap: enough to say it is too large
        self.body.append(body)

    def on_headers_complete(self) -> None:
        if not self._interim():
            self.headers_done = True

    def delimited_by_close(self) -> bool:
        """An answer with neither a length nor chunks ends where the connection does."""
        framing = {name.lower() for name, _ in self.headers}
        return self.headers_done and not framing & {b"content-length", b"transfer-encoding"}

    def finished(self) -> bool:
        """The whole answer is in, or as much of it as is kept."""
        return self.complete or self.cut

    def head_finished(self) -> bool:
        """A streamed answer's head is in (or, for a short one, all of it)."""
        return self.headers_done or self.finished()

    def on_message_complete(self) -> None:
        if self._interim():
            # 100 Continue, 103 Early Hints: the answer itself follows on the connection.
            self.headers.clear()
            self.encoded = False
            return
        self.complete = True
        # Asked here: llhttp answers it only within the message's callbacks.
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()

    def _interim(self) -> bool:
        assert self.parser is not None
        status: int = self.parser.get_status_code()
        return 100 <= status < 200 and status != 101


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        *,
        max_body_bytes: int = 1 << 20,
        keepalive_seconds: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.keepalive_seconds = keepalive_seconds
        self._ssl = ssl_context
        self._idle: defaultdict[_Origin, list[_Connection]] = defaultdict(list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80),
                  request.extensions.get("ssl_context"))
        timeouts = request.extensions.get("timeout", {})
        streamed = bool(request.extensions.get("stream"))
        head = self._head(request)
        body = request.content  # the A2A client sends a bytes body, read
        reused = self._take(origin)
        if reused is not None:
            try:
                return await self._exchange(reused, origin, head, body, timeouts, streamed)
            except _StaleConnection:
                pass  # the agent closed it while it was idle: nothing was answered; once more
        connection = await self._connect(origin, timeouts.get("connect"))
        try:
            return await self._exchange(connection, origin, head, body, timeouts, streamed)
        except _StaleConnection:
            if origin[3] is not None:
                # TLS 1.3 tells a refused client certificate only after the handshake, by an
                # alert that asyncio's TLS reports as a plain close.
                raise CertificateRefused(
                    "the agent closed a new TLS connection before answering: it refused the "
                    "client certificate, most likely", request=request) from None
            raise httpx.RemoteProtocolError("the agent closed the connection without an answer",
                                            request=request) from None

    def _take(self, origin: _Origin) -> _Connection | None:
        idle = self._idle[origin]
        while idle:
            connection = idle.pop()
            if connection.usable(self.keepalive_seconds):
                return connection
            connection.close()
        return None

    async def _connect(self, origin: _Origin, connect_seconds: float | None) -> _Connection:
        scheme, host, port, context = origin
        if scheme != "https":
            context = None
        elif context is None:
            if self._ssl is None:
                import certifi  # httpx's own CA bundle, so the same agents are trusted

                self._ssl = ssl.create_default_context(cafile=certifi.where())
            context = self._ssl
        try:
            async with asyncio.timeout(connect_seconds):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, limit=READ_SIZE)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from None
        return _Connection(reader, writer)

    @staticmethod
    def _head(request: httpx.Request) -> bytes:
        target = request.url.raw_path
        lines = [request.method.encode() + b" " + target + b" HTTP/1.1"]
        lines += [name + b": " + value for name, value in request.headers.raw]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _exchange(self, connection: _Connection, origin: _Origin,
                        head: bytes, body: bytes, timeouts: dict[str, float | None],
                        streamed: bool = False) -> httpx.Response:
        answer = _Answer(self.max_body_bytes)
        parser = answer.parser = httptools.HttpResponseParser(answer)
        # One deadline for the whole exchange (httpx's read timeout): a scope per read would
        # cost more than the read on loopback. None: the caller's own deadline bounds it.
        read_seconds = timeouts.get("read")
        until = answer.head_finished if streamed else answer.finished
        try:
            if read_seconds is None:
                await self._converse(connection, answer, head + body, until)
            else:
                async with asyncio.timeout(read_seconds):
                    await self._converse(connection, answer, head + body, until)
        except _StaleConnection:
            connection.close()
            raise
        except TimeoutError:
            connection.close()
            raise httpx.ReadTimeout("the agent did not answer in time") from None
        except _PARSER_ERRORS as exc:
            connection.close()
            raise httpx.RemoteProtocolError(f"not an HTTP answer: {exc!r}") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            connection.close()
            # A TLS alert is the agent refusing the connection (our client certificate, in
            # TLS 1.3 told only after the handshake), not an idle connection it closed.
            if not answer.received and not isinstance(exc, ssl.SSLError):
                raise _StaleConnection from None
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from None
        except BaseException:
            connection.close()  # cancelled mid-answer: the connection is in an unknown state
            raise
        if streamed and not answer.finished():
            return httpx.Response(parser.get_status_code(), headers=answer.headers,
                                  stream=LiveBody(self, connection, origin, answer),
                                  extensions={"http_version": b"HTTP/1.1"})
        self._release(connection, origin, answer)
        return httpx.Response(parser.get_status_code(), headers=answer.headers,
                              stream=ReadBody(b"".join(answer.body), answer.encoded),
                              extensions={"http_version": b"HTTP/1.1"})

    def _release(self, connection: _Connection, origin: _Origin, answer: _Answer) -> None:
        """A connection whose answer has been read: kept for the next, or closed."""
        if answer.cut or not answer.keep_alive:
            connection.close()
        else:
            connection.idle_since = time.monotonic()
            self._idle[origin].append(connection)

    @staticmethod
    async def _converse(connection: _Connection, answer: _Answer, request: bytes,
                        until: Callable[[], bool]) -> None:
        connection.writer.write(request)
        await connection.writer.drain()
        assert answer.parser is not None
        while not until():
            data = await connection.reader.read(READ_SIZE)
            if not data:
                if not answer.received:
                    raise _StaleConnection
                if not answer.delimited_by_close():
                    raise httpx.RemoteProtocolError("the answer was cut short")
                answer.complete = True  # its end is the close; not kept alive
            answer.received = True
            answer.parser.feed_data(data)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


class CertificateRefused(httpx.ConnectError):
    """A connection made with a request's own client certificate that the agent refused."""


class _StaleConnection(Exception):
    """A connection that gave no byte of an answer (closed by the agent while idle)."""
