"""What an agent call presents: a header read from a secret (bearer token, API key), an OAuth 2.0
client-credentials token, a client certificate for mutual TLS.

Secret values live in this process's memory only: never in Redis, a log, a step, an error or a
trace. Each is read on first use and kept `max_age` seconds (a hit costs a clock read, no
thread, no I/O); a 401 from the agent asks for it again once, bypassing every cache, which is
how a rotated secret is picked up before its age runs out. Reading a secret is blocking (boto3,
through Powertools' parameters utility), so it runs in a worker thread, once for all the turns
waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote_plus

import httpx

from orchestrator_flows.flow import (
    Agent,
    BearerAuth,
    MutualTls,
    OAuth2ClientCredentials,
    SecretRef,
)

Header = tuple[bytes, bytes]
DEFAULT_MAX_AGE_SECONDS = 300.0
# A token is renewed this long before it expires (or a tenth of its life, if shorter), so no
# request goes out with a token that lapses on the way.
TOKEN_RENEW_BEFORE_SECONDS = 60.0
TOKEN_TIMEOUT_SECONDS = 5.0
DEFAULT_TOKEN_LIFETIME_SECONDS = 300.0  # when the token endpoint does not say (`expires_in`)


class CredentialsUnavailable(Exception):
    """The agent's credentials could not be had: a secret that cannot be read, a token endpoint
    that refused. The message names where they come from, never what they are."""


class SecretStore(Protocol):
    max_age_seconds: float  # how long a value read may be kept

    def read(self, ref: SecretRef, *, fresh: bool) -> str:
        """The secret's value (blocking); `fresh` skips any cache. Raises
        CredentialsUnavailable."""
        ...


class PowertoolsSecrets:
    """Secrets Manager secrets and SSM parameters (decrypted) through Powertools' parameters
    utility, whose own cache is bounded by `max_age` too."""

    def __init__(self, max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS) -> None:
        self.max_age_seconds = max_age_seconds
        # botocore's DEBUG lines dump whole responses, a secret's value among them: a process
        # whose log level is DEBUG (AWS_LAMBDA_LOG_LEVEL, say) must not write it out.
        for name in ("botocore", "boto3", "urllib3"):
            quiet = logging.getLogger(name)
            if quiet.level < logging.INFO:  # NOTSET (0) too: the root's level may be DEBUG later
                quiet.setLevel(logging.INFO)

    def read(self, ref: SecretRef, *, fresh: bool) -> str:
        # Imported here: boto3 is paid for only by a process whose agents use credentials.
        from aws_lambda_powertools.utilities import parameters

        max_age = max(1, int(self.max_age_seconds))
        try:
            if ref.source == "secretsmanager":
                value: Any = parameters.get_secret(ref.name, max_age=max_age, force_fetch=fresh)
            else:
                value = parameters.get_parameter(ref.name, decrypt=True, max_age=max_age,
                                                 force_fetch=fresh)
        except parameters.exceptions.GetParameterError as exc:
            raise CredentialsUnavailable(f"{ref} could not be read: {_aws_error(exc)}") from None
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="strict")
        if not isinstance(value, str) or not value:
            raise CredentialsUnavailable(f"{ref} holds no text")
        return value


def _aws_error(exc: BaseException) -> str:
    """The AWS error's code (ResourceNotFoundException, AccessDeniedException …): its message
    could quote more than we want in a step."""
    cause = exc.__cause__ or exc.__context__
    response = getattr(cause, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if isinstance(code, str):
            return code
    return type(cause or exc).__name__


@dataclass
class _Kept:
    value: Any
    until: float  # monotonic


class AgentCredentials:
    """One agent's credentials, as configured in the flow file."""

    def __init__(
        self, agent: Agent, secrets: SecretStore, *,
        token_http: Callable[[], httpx.AsyncClient],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.agent = agent
        self._secrets = secrets
        self._token_http = token_http
        self._max_age = secrets.max_age_seconds
        self._clock = clock
        self._kept: dict[str, _Kept] = {}
        self._lock = asyncio.Lock()

    @property
    def has_headers(self) -> bool:
        return self.agent.auth is not None

    async def headers(self, refused: tuple[Header, ...] | None = None) -> tuple[Header, ...]:
        """The headers that authenticate a request (none without header auth). `refused`: the
        ones the agent just refused, which are read afresh, unless another turn already did."""
        auth = self.agent.auth
        if auth is None:
            return ()
        kept = self._kept.get("headers")
        if refused is None and kept is not None and self._clock() < kept.until:
            headers: tuple[Header, ...] = kept.value
            return headers
        async with self._lock:
            kept = self._usable("headers", refused)
            if kept is not None:
                return tuple(kept.value)
            fresh = refused is not None
            read_at = self._clock()
            if isinstance(auth, OAuth2ClientCredentials):
                token, lifetime = await self._token(auth, fresh)
                value = (b"authorization", b"Bearer " + _header_value(token, "the token"))
                until = read_at + lifetime - min(TOKEN_RENEW_BEFORE_SECONDS, lifetime / 10)
            else:
                secret = await self._read(auth.secret, fresh)
                if isinstance(auth, BearerAuth):
                    value = (b"authorization", b"Bearer " + _header_value(secret, str(auth.secret)))
                else:
                    value = (auth.header.lower().encode(), _header_value(secret, str(auth.secret)))
                until = read_at + self._max_age
            self._kept["headers"] = _Kept((value,), until)
            return (value,)

    async def ssl_context(self, refused: ssl.SSLContext | None = None) -> ssl.SSLContext | None:
        """The TLS context with the agent's client certificate (None without mTLS); `refused`
        as for `headers`. A context is rebuilt only when the secret's value changed:
        connections made with the old one stay pooled until then."""
        mtls = self.agent.mtls
        if mtls is None:
            return None
        kept = self._kept.get("tls")
        if refused is None and kept is not None and self._clock() < kept.until:
            context: ssl.SSLContext = kept.value[1]
            return context
        async with self._lock:
            usable = self._usable("tls", refused)
            if usable is not None:
                return usable.value[1]  # type: ignore[no-any-return]
            kept = self._kept.get("tls")
            read_at = self._clock()
            raw = await self._read(mtls.secret, refused is not None)
            if kept is not None and kept.value[0] == raw:
                context = kept.value[1]
            else:
                context = await asyncio.to_thread(client_tls_context, raw, mtls)
            self._kept["tls"] = _Kept((raw, context), read_at + self._max_age)
            return context

    def _usable(self, what: str, refused: Any) -> _Kept | None:
        """What is kept, if it may serve: within its age and, after a refusal, not what was
        refused (a turn refused at the same time has read it afresh already)."""
        kept = self._kept.get(what)
        if kept is None:
            return None
        if refused is not None:
            current = kept.value if what == "headers" else kept.value[1]
            if current is refused or current == refused:
                return None
        return kept if self._clock() < kept.until else None

    async def _read(self, ref: SecretRef, fresh: bool) -> str:
        return await asyncio.to_thread(self._secrets.read, ref, fresh=fresh)

    async def _token(self, auth: OAuth2ClientCredentials, fresh: bool) -> tuple[str, float]:
        """A new access token and its lifetime in seconds. A token endpoint that refuses the
        client (`invalid_client`) has the client secret read afresh and asked once more: it
        may have been rotated."""
        secret = await self._read(auth.client_secret, fresh)
        try:
            return await self._ask_token(auth, secret)
        except _ClientRefused:
            if fresh:
                raise
        return await self._ask_token(auth, await self._read(auth.client_secret, True))

    async def _ask_token(self, auth: OAuth2ClientCredentials, secret: str) -> tuple[str, float]:
        """RFC 6749 §4.4: the client id and secret form-encoded into HTTP Basic (§2.3.1)."""
        form = {"grant_type": "client_credentials"}
        if auth.scopes:
            form["scope"] = " ".join(auth.scopes)
        try:
            answer = await self._token_http().post(
                auth.token_url, data=form, timeout=TOKEN_TIMEOUT_SECONDS,
                auth=(quote_plus(auth.client_id), quote_plus(secret)),
                headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise CredentialsUnavailable(
                f"the token endpoint {auth.token_url} could not be reached: "
                f"{type(exc).__name__}") from None
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.status_code != 200 or not isinstance(body, dict):
            reason = body.get("error") if isinstance(body, dict) else None
            said = f" ({reason})" if isinstance(reason, str) and len(reason) <= 64 else ""
            refused = answer.status_code == 401 or reason == "invalid_client"
            raise (_ClientRefused if refused else CredentialsUnavailable)(
                f"the token endpoint {auth.token_url} answered HTTP {answer.status_code}{said}")
        token, kind = body.get("access_token"), body.get("token_type", "Bearer")
        if not isinstance(token, str) or not token or str(kind).lower() != "bearer":
            raise CredentialsUnavailable(
                f"the token endpoint {auth.token_url} answered no bearer access_token")
        lifetime = body.get("expires_in", DEFAULT_TOKEN_LIFETIME_SECONDS)
        if isinstance(lifetime, str) and lifetime.isdigit():
            lifetime = int(lifetime)
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME_SECONDS
        return token, float(lifetime)


class _ClientRefused(CredentialsUnavailable):
    """The token endpoint refused the client's id and secret."""


def _header_value(value: str, where: str) -> bytes:
    """A credential as a header value: one line of visible ASCII, or refused (a value with a
    line break could forge headers)."""
    value = value.strip()
    if not value or not value.isascii() or not value.isprintable():
        raise CredentialsUnavailable(f"{where} is not usable in an HTTP header")
    return value.encode("ascii")


def client_tls_context(raw: str, mtls: MutualTls) -> ssl.SSLContext:
    """A TLS context presenting the secret's client certificate. The standard library loads a
    certificate and key only from files: they are written to a private temporary directory
    (mode 0700, files 0600), loaded, and removed at once."""
    import tempfile  # only a process with a client certificate pays for it

    try:
        material = json.loads(raw)
        certificate, key = material["certificate"], material["private_key"]
        authority = material.get("ca_certificate")
        if not all(isinstance(part, str) for part in (certificate, key)):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise CredentialsUnavailable(
            f"{mtls.secret} must hold JSON with certificate and private_key (PEM)") from None
    try:
        if isinstance(authority, str):
            context = ssl.create_default_context(cadata=authority)
        else:
            import certifi  # httpx's CA bundle, as for agents without a client certificate

            context = ssl.create_default_context(cafile=certifi.where())
        with tempfile.TemporaryDirectory(prefix="of-mtls-") as private:
            path = os.path.join(private, "client.pem")
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="ascii") as file:
                file.write(certificate.strip() + "\n" + key.strip() + "\n")
            context.load_cert_chain(path)
    except (ssl.SSLError, ValueError, UnicodeError) as exc:
        raise CredentialsUnavailable(
            f"{mtls.secret} does not hold a usable certificate and key: "
            f"{type(exc).__name__}") from None
    return context
