"""The pooled A2A client: each step's one deadline, retries with backoff, card discovery, and
answers read with a size cap. The agent's URL is named in every failure message."""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from orchestrator_flows import untrusted
from orchestrator_flows.a2a import security
from orchestrator_flows.a2a.answers import reduce_response
from orchestrator_flows.a2a.credentials import (
    AgentCredentials,
    CredentialsUnavailable,
    PowertoolsSecrets,
    SecretStore,
)
from orchestrator_flows.a2a.messages import AgentReply, AgentRequest
from orchestrator_flows.a2a.streams import ServerSentEvents, StreamFold
from orchestrator_flows.a2a.transport import CertificateRefused, LeanTransport, ReadBody
from orchestrator_flows.a2a.wire import CARD_PATH, card_streams, rpc_body, version_from_card
from orchestrator_flows.errors import AgentFailure, FailureCode
from orchestrator_flows.flow import Agent
from orchestrator_flows.records import Attempt
from orchestrator_flows.timeouts import deadline_at, deadline_in

MAX_BODY_BYTES = 1 << 20
# Below common server keep-alive timeouts (uvicorn: 5 s) so an idle connection is dropped here
# before the agent closes it under a request in flight.
KEEPALIVE_SECONDS = 2.0
# What every request says besides Host, Content-Length and A2A-Version. No Accept-Encoding: an
# answer is small and on a private network; compressing it costs both ends more CPU than it
# saves.
USER_AGENT = b"orchestrator-flows"
RPC_HEADERS = ((b"content-type", b"application/json"), (b"accept", b"application/json"),
               (b"user-agent", USER_AGENT))
STREAM_HEADERS = ((b"content-type", b"application/json"), (b"accept", b"text/event-stream"),
                  (b"user-agent", USER_AGENT))
CARD_HEADERS = ((b"accept", b"application/json"), (b"user-agent", USER_AGENT))
Header = tuple[bytes, bytes]
# Told when an agent's card asks for credentials the flow does not configure: the agent's name
# and the card's alternatives (scheme name -> kind).
UnmetAuth = Callable[[str, list[dict[str, str]]], None]
# One encoder for every request body: `json.dumps` with options builds a new one each call.
_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class A2AClient:
    """Requests go to the httpx transport directly, as `httpx.Request`s: the httpx client
    above a transport (URL and header merging, cookies, auth flows, redirects, event hooks)
    cost more CPU per call than our transport itself, and the hop uses none of it
    (bench/RESULTS.md). Redirects are not followed, as before; no cookie is kept."""

    def __init__(
        self,
        *,
        timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_connections: int = 100,
        secrets: SecretStore | None = None,
        on_unmet_auth: UnmetAuth | None = None,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.max_body_bytes = max_body_bytes
        self._transport = transport
        # Reads and writes are bounded by `send`'s one deadline for the whole step, which a
        # transport's own read timeout (as long, started later) could never beat.
        self._timeouts: dict[str, float | None] = {
            "connect": min(3.0, timeout_seconds), "read": None, "write": None, "pool": None}
        self._urls: dict[str, httpx.URL] = {}
        self._cards: dict[str, asyncio.Future[Any]] = {}  # by origin: the card, or None
        self._known_versions: dict[str, str] = {}  # by agent URL, once read
        self._card_streams: dict[str, bool] = {}  # by agent URL: its card says it streams
        self._checked: set[str] = set()  # agents whose card's security was looked at
        self._on_unmet_auth = on_unmet_auth
        self._secrets = secrets
        self._credentials: dict[str, AgentCredentials] = {}
        self._token_client: httpx.AsyncClient | None = None
        # Requests past `max_connections` wait here, first come first served. The transport
        # opens a connection only for a request in flight, so this bounds connections too.
        # (httpx's own pool queue rescanned every queued request against every connection each
        # time one started or ended: a burst of a few hundred steps spent most of its CPU there.)
        self._slots = asyncio.Semaphore(max_connections)
        self._rpc_ids = itertools.count(1)

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        # Built on first use: its connections belong to the loop that opens them.
        if self._transport is None:
            self._transport = LeanTransport(
                max_body_bytes=self.max_body_bytes, keepalive_seconds=KEEPALIVE_SECONDS)
        return self._transport

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None
        if self._token_client is not None:
            await self._token_client.aclose()
            self._token_client = None

    def forget_credentials(self) -> None:
        """Drop every agent's kept secrets and tokens: the next call reads them again."""
        self._credentials.clear()

    def credentials(self, agent: Agent) -> AgentCredentials | None:
        """The agent's credentials, kept for the process (None: it is called without)."""
        if agent.auth is None and agent.mtls is None:
            return None
        found = self._credentials.get(agent.name)
        # The versions of an agent are agents of their own with the same credentials: one
        # cache serves them all (credentials changed by configuration get a new one).
        if found is None or (found.agent is not agent and (
                found.agent.auth != agent.auth or found.agent.mtls != agent.mtls)):
            if self._secrets is None:
                self._secrets = PowertoolsSecrets()
            found = AgentCredentials(agent, self._secrets, token_http=self._token_http)
            self._credentials[agent.name] = found
        return found

    def _token_http(self) -> httpx.AsyncClient:
        # Tokens are asked for rarely (once per lifetime per agent): httpx's own client.
        if self._token_client is None:
            self._token_client = httpx.AsyncClient(follow_redirects=False)
        return self._token_client

    async def send(self, request: AgentRequest) -> AgentReply:
        """Send one message, trying transient failures again with backoff, every try with the
        same messageId and all within one deadline; raises AgentFailure for every way the agent
        can fail. The reply or failure carries each try's outcome."""
        clock = asyncio.get_running_loop().time
        seconds = (self.timeout_seconds if request.timeout_seconds is None
                   else min(self.timeout_seconds, request.timeout_seconds))
        deadline = clock() + seconds
        policy = request.agent.retry
        attempts: list[Attempt] = []
        streams: list[StreamFold] = []  # each try's stream, if the agent streams
        started = clock()
        try:
            async with deadline_at(deadline):
                version = request.a2a_version or await self.protocol_version(request.agent)
                for attempt in range(1, policy.attempts + 1):
                    started = clock()
                    try:
                        reply = await self._send(request, version, streams)
                    except AgentFailure as failure:
                        attempts.append(_attempt(failure.outcome, clock() - started))
                        pause = policy.backoff(attempt)
                        if (not failure.retried or attempt == policy.attempts
                                or clock() + pause >= deadline):
                            failure.attempts = tuple(attempts)
                            raise
                        await asyncio.sleep(pause)
                        continue
                    attempts.append(_attempt("ok", clock() - started))
                    return reply.tried(tuple(attempts))
                raise AssertionError("unreachable: the last try returns or raises")
        except TimeoutError as exc:
            timed_out = AgentFailure(
                FailureCode.TIMEOUT,
                f"agent {request.agent.name} did not answer within {seconds:g} s",
            ) if not streams or not streams[-1].opened else streams[-1].broken(
                f"the step's deadline of {seconds:g} s passed before it ended")
            attempts.append(_attempt(timed_out.outcome, clock() - started))
            timed_out.attempts = tuple(attempts)
            raise timed_out from exc

    async def protocol_version(self, agent: Agent) -> str:
        """The flow file's pin, else what the agent card advertises (fetched once per origin)."""
        if agent.a2a_version is not None:
            if agent.name not in self._checked:
                # Read in the background, only to see whether it asks for credentials.
                self._card(agent).add_done_callback(
                    lambda done: self._check_security(agent, _result(done)))
            return agent.a2a_version
        known = self._known_versions.get(agent.url)
        if known is not None:
            return known
        card = await asyncio.shield(self._card(agent))
        self._check_security(agent, card)
        version = version_from_card(card)
        self._known_versions[agent.url] = version
        return version

    def _card(self, agent: Agent) -> asyncio.Future[Any]:
        parts = urlsplit(agent.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        future = self._cards.get(origin)
        if future is None:
            future = asyncio.get_running_loop().create_task(self._read_card(origin))
            self._cards[origin] = future
        return future

    async def _read_card(self, origin: str) -> Any:
        """The agent card as JSON, or None when there is none to read."""
        try:
            async with self._slots:
                status, raw = await self._exchange(
                    "GET", origin + CARD_PATH, None, CARD_HEADERS, "the agent card",
                    {**self._timeouts, "read": min(2.0, self.timeout_seconds)})
            return untrusted.loads(raw) if status == 200 else None
        except (httpx.HTTPError, AgentFailure, ValueError, RecursionError):
            return None

    def _check_security(self, agent: Agent, card: Any) -> None:
        """Once per agent: tell when its card asks for credentials the flow does not give."""
        if agent.name in self._checked:
            return
        self._checked.add(agent.name)
        unmet = security.unmet(card, agent)
        if unmet is not None and self._on_unmet_auth is not None:
            self._on_unmet_auth(agent.name, unmet)

    def _streams(self, agent: Agent) -> bool:
        """Whether the agent is called with a streaming request: its card, once read, says it
        streams, and the flow file does not turn that off. (A pinned agent's card is read in
        the background on its first call; an agent continuing a task may not have had its
        card read by this process yet: it is asked for now, and used when it is in.)"""
        if not agent.stream.enabled:
            return False
        streams = self._card_streams.get(agent.url)
        if streams is None:
            card = self._card(agent)
            if not card.done():
                return False
            streams = self._card_streams[agent.url] = card_streams(_result(card))
        return streams

    async def _send(self, request: AgentRequest, version: str,
                    streams: list[StreamFold]) -> AgentReply:
        rpc_id = str(next(self._rpc_ids))  # only matches the answer to its request
        agent = request.agent
        fold = None
        if self._streams(agent):
            fold = StreamFold(rpc_id, version, agent.name, agent.stream.idle_seconds)
            streams.append(fold)
        body = _compact_json(rpc_body(request, version, rpc_id, fold is not None)).encode()
        headers = (*(RPC_HEADERS if fold is None else STREAM_HEADERS),
                   (b"a2a-version", version.encode()))
        credentials = self.credentials(agent)
        if credentials is None:
            status, raw = await self._post(agent, body, headers, None, fold)
        else:
            status, raw = await self._post_with(agent, credentials, body, headers, fold)
        if status in (401, 403):
            asked = ("refused the orchestrator's credentials" if credentials is not None
                     and credentials.has_headers else "asks for credentials the flow does not "
                     "configure" if credentials is None else "refused the client certificate")
            raise AgentFailure(FailureCode.AUTH_FAILED,
                               f"agent {agent.name} {asked} (HTTP {status})", http_status=status)
        if status >= 400:
            raise AgentFailure(FailureCode.HTTP_ERROR,
                               f"agent {agent.name} answered HTTP {status}", http_status=status)
        if fold is not None and fold.opened:
            return fold.reply()
        return reduce_response(raw, rpc_id, version, agent.name)

    async def _post_with(self, agent: Agent, credentials: AgentCredentials, body: bytes,
                         headers: tuple[Header, ...],
                         fold: StreamFold | None) -> tuple[int, bytes]:
        """The request with the agent's credentials; on a 401 (or a refused certificate) they
        are read afresh and the request sent once more."""
        refused_headers: tuple[Header, ...] | None = None
        refused_tls: ssl.SSLContext | None = None
        for again in (False, True):
            try:
                extra = await credentials.headers(refused_headers)
                tls = await credentials.ssl_context(refused_tls)
            except CredentialsUnavailable as exc:
                raise AgentFailure(FailureCode.AUTH_FAILED,
                                   f"agent {agent.name}: no credentials: {exc}") from None
            try:
                status, raw = await self._post(agent, body, (*headers, *extra), tls, fold)
            except AgentFailure as failure:
                if failure.code is FailureCode.AUTH_FAILED and not again:
                    refused_tls = tls  # the certificate was refused
                    continue
                raise
            if status != 401:
                break
            refused_headers, refused_tls = extra, tls if not extra else None
        return status, raw

    async def _post(self, agent: Agent, body: bytes, headers: tuple[Header, ...],
                    tls: ssl.SSLContext | None,
                    fold: StreamFold | None = None) -> tuple[int, bytes]:
        name = agent.name
        try:
            async with self._slots:
                return await self._exchange("POST", agent.url, body, headers, f"agent {name}",
                                            self._timeouts, tls, fold)
        except httpx.TimeoutException as exc:
            raise AgentFailure(FailureCode.TIMEOUT,
                               f"agent {name} at {agent.url} timed out: {exc!r}") from exc
        except httpx.HTTPError as exc:
            if tls is not None and _certificate_refused(exc):
                raise AgentFailure(
                    FailureCode.AUTH_FAILED,
                    f"agent {name} refused the client certificate: {type(exc).__name__}",
                ) from exc
            raise AgentFailure(
                FailureCode.UNREACHABLE,
                f"agent {name} could not be reached at {agent.url}: {type(exc).__name__}",
            ) from exc

    async def _exchange(
        self, method: str, url: str, body: bytes | None, headers: tuple[Header, ...], what: str,
        timeouts: dict[str, float | None], tls: ssl.SSLContext | None = None,
        fold: StreamFold | None = None,
    ) -> tuple[int, bytes]:
        """One request through the transport: the answer's status and its body, read up to
        the cap (an error answer's body is not read). An answer streamed as events, to a
        request with a `fold`, is read into the fold (the body returned is then empty)."""
        target = self._urls.get(url)
        if target is None:
            target = self._urls[url] = httpx.URL(url)
        # Built whole here, Host and Content-Length included, with its body as a stream:
        # httpx then neither adds nor encodes anything (`httpx.Request`'s documented `stream=`
        # form).
        framing = [(b"host", target.netloc)]
        if body is not None:
            framing.append((b"content-length", b"%d" % len(body)))
        extensions: dict[str, Any] = {"timeout": timeouts}
        if tls is not None:
            extensions["ssl_context"] = tls
        if fold is not None:
            extensions["stream"] = True
        request = httpx.Request(method, target, headers=[*framing, *headers],
                                stream=httpx.ByteStream(body or b""), extensions=extensions)
        request.read()  # a bytes body: nothing to wait for, and `content` then readable
        response = await self.transport.handle_async_request(request)
        try:
            if response.status_code >= 400:
                return response.status_code, b""
            if fold is not None and response.headers.get("content-type", "").lower().startswith(
                    "text/event-stream"):
                await self._read_stream(response, fold, what)
                return response.status_code, b""
            return response.status_code, await self._read_capped(response, what)
        finally:
            await response.aclose()

    async def _read_stream(self, response: httpx.Response, fold: StreamFold,
                           what: str) -> None:
        """The events of a streamed answer folded in, until the answer is complete; each
        awaited at most the agent's idle time. Past the head, whatever ends the stream early
        is a broken stream (the agent has the message), and the whole is capped as a
        buffered answer is."""
        fold.opened = True
        if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
            raise AgentFailure(FailureCode.BAD_RESPONSE,
                               f"{what} sent a compressed stream, which it was not asked for")
        events = ServerSentEvents()
        chunks = response.aiter_bytes().__aiter__()
        size = 0
        try:
            while True:
                try:
                    async with deadline_in(fold.idle_seconds):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    raise fold.broken("it ended before the task did") from None
                except TimeoutError:
                    raise fold.broken(f"nothing came for {fold.idle_seconds:g} s") from None
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise _too_large(what, self.max_body_bytes)
                for data in events.feed(chunk):
                    if fold.add(data):
                        return
        except httpx.HTTPError as exc:
            raise fold.broken(f"the connection broke ({type(exc).__name__})") from exc

    async def _read_capped(self, response: httpx.Response, what: str) -> bytes:
        cap = self.max_body_bytes
        stream = response.stream
        if isinstance(stream, ReadBody) and not stream.encoded:
            # Read whole by our transport, up to just past the cap: taken as it is.
            if len(stream.body) > cap:
                raise _too_large(what, cap)
            return stream.body
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise _too_large(what, cap)
        if response.is_stream_consumed:  # built read (an in-process transport): decoded
            if len(response.content) > cap:
                raise _too_large(what, cap)
            return response.content
        buffer = bytearray()
        async for chunk in response.aiter_raw():
            buffer += chunk
            if len(buffer) > cap:
                raise _too_large(what, cap)
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding in ("", "identity"):
            return bytes(buffer)
        return _decompressed(bytes(buffer), encoding, what, cap)


def _result(done: asyncio.Future[Any]) -> Any:
    return None if done.cancelled() or done.exception() is not None else done.result()


def _certificate_refused(exc: BaseException) -> bool:
    """Whether a TLS failure is the agent refusing our client certificate: a TLS alert from it
    (`TLSV13_ALERT_CERTIFICATE_REQUIRED`, `TLSV1_ALERT_UNKNOWN_CA` …). A certificate of the
    agent's that we refuse is no alert (`CERTIFICATE_VERIFY_FAILED`): the agent is unusable,
    not our credentials."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, CertificateRefused) or "_ALERT_" in str(seen).upper():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _decompressed(body: bytes, encoding: str, what: str, cap: int) -> bytes:
    """A body the agent compressed though it was not asked to, decompressed no further than
    just past the cap: a few KiB of gzip can stand for a GiB, which is never built here."""
    tries: tuple[int, ...]
    if encoding in ("gzip", "x-gzip"):
        tries = (16 + zlib.MAX_WBITS,)
    elif encoding == "deflate":  # zlib-wrapped as RFC 9110 says, or raw as some servers send
        tries = (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    else:
        raise AgentFailure(FailureCode.BAD_RESPONSE,
                           f"{what} answered in an encoding it was not asked for")
    for wbits in tries:
        try:
            plain = zlib.decompressobj(wbits).decompress(body, cap + 1)
        except zlib.error:
            continue
        if len(plain) > cap:
            raise _too_large(what, cap)
        return plain
    raise AgentFailure(FailureCode.BAD_RESPONSE, f"{what} answered a body that does not "
                       f"decompress as {encoding}")


def _too_large(what: str, cap: int) -> AgentFailure:
    return AgentFailure(FailureCode.RESPONSE_TOO_LARGE, f"{what} answered more than {_size(cap)}")


def _attempt(outcome: str, seconds: float) -> Attempt:
    return Attempt(outcome=outcome, latency_ms=round(seconds * 1000, 2))


def _size(count: int) -> str:
    """A byte count as people write it (and as no masking rule takes for a code)."""
    return f"{count / (1 << 20):g} MiB" if count >= 1 << 20 else f"{count / 1024:g} KiB"
