"""IAM authentication to ElastiCache: the password is a SigV4-presigned `connect` request.

ElastiCache (Valkey 7.2+, Redis OSS 7+, serverless or not) accepts, as the password of a user
whose authentication mode is IAM, a presigned GET of `http://<cache name>/?Action=connect&
User=<user id>[&ResourceType=ServerlessCache]` for the service `elasticache`, without its
scheme. The token is good for 15 minutes and is checked only when a connection authenticates:
a connection already open stays open (ElastiCache closes it after 12 hours; the store's
connection reopens, authenticating with a fresh token).

The signing is done here (a dozen lines of SigV4) rather than through botocore's presigner,
so that the clock is an argument: the tests sign at a fixed time and check the result against
botocore's own signer. The credentials come from botocore's chain, resolved once (the first
token is made on the first connection, inside a turn's deadline; the chain reads environment
variables in Lambda, or the SnapStart container endpoint once).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from redis.credentials import CredentialProvider
from redis.exceptions import AuthenticationError

TOKEN_LIFETIME_SECONDS = 900
# A token is renewed this long before it expires: a connection that opens just before that
# still authenticates with several minutes to spare.
REFRESH_BEFORE_SECONDS = 300
SERVICE = "elasticache"


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    access_key: str
    secret_key: str
    session_token: str | None = None


class ChainCredentials:
    """The process's credentials from botocore's chain (environment, the SnapStart container
    endpoint, ...), resolved once and refreshed by botocore when they near their expiry."""

    def __init__(self) -> None:
        self._found: Any = None

    def __call__(self) -> AwsCredentials:
        if self._found is None:
            import botocore.session

            self._found = botocore.session.get_session().get_credentials()
            if self._found is None:
                raise RuntimeError("no AWS credentials to sign the cache's IAM token with")
        frozen = self._found.get_frozen_credentials()  # one consistent set
        return AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token)

    def forget(self) -> None:
        """Resolve the chain again (after a SnapStart restore: the init's are stale)."""
        self._found = None


def _quote(value: str) -> str:
    return quote(value, safe="-_.~")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def presign_connect(*, cache_name: str, user_id: str, region: str,
                    credentials: AwsCredentials, at: datetime, serverless: bool = True,
                    expires_seconds: int = TOKEN_LIFETIME_SECONDS) -> str:
    """The IAM auth token: `<cache name>/?Action=connect&...&X-Amz-Signature=...`."""
    host = cache_name.lower()
    stamp = at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{stamp[:8]}/{region}/{SERVICE}/aws4_request"
    query = {"Action": "connect", "User": user_id,
             "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
             "X-Amz-Credential": f"{credentials.access_key}/{scope}",
             "X-Amz-Date": stamp, "X-Amz-Expires": str(expires_seconds),
             "X-Amz-SignedHeaders": "host"}
    if serverless:
        query["ResourceType"] = "ServerlessCache"
    if credentials.session_token:
        query["X-Amz-Security-Token"] = credentials.session_token
    canonical_query = "&".join(f"{_quote(key)}={_quote(value)}"
                               for key, value in sorted(query.items()))
    canonical_request = "\n".join(["GET", "/", canonical_query, f"host:{host}", "", "host",
                                   hashlib.sha256(b"").hexdigest()])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = _hmac(f"AWS4{credentials.secret_key}".encode(), stamp[:8])
    for part in (region, SERVICE, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{host}/?{canonical_query}&X-Amz-Signature={signature}"


class IamAuth(CredentialProvider):
    """redis-py's credential provider: (user id, token) for each connection that opens; one
    token is kept until REFRESH_BEFORE_SECONDS before it expires."""

    def __init__(self, *, cache_name: str, user_id: str, region: str,
                 credentials: Callable[[], AwsCredentials] | None = None,
                 clock: Callable[[], float] = time.time, serverless: bool = True) -> None:
        self.cache_name = cache_name
        self.user_id = user_id
        self.region = region
        self._credentials = credentials or ChainCredentials()
        self._clock = clock
        self._serverless = serverless
        self._token: tuple[str, float] | None = None  # the token, and when to renew it
        self._lock = threading.Lock()

    def token(self) -> str:
        now = self._clock()
        with self._lock:
            if self._token is None or now >= self._token[1]:
                try:
                    credentials = self._credentials()
                except Exception as exc:
                    # A Redis error: the store answers 503 store_unavailable, as for any
                    # failure to reach it, never a 500.
                    raise AuthenticationError(
                        f"no credentials to sign the cache's IAM token: "
                        f"{type(exc).__name__}: {exc}") from exc
                signed = presign_connect(
                    cache_name=self.cache_name, user_id=self.user_id, region=self.region,
                    credentials=credentials, serverless=self._serverless,
                    at=datetime.fromtimestamp(now, UTC))
                self._token = (signed, now + TOKEN_LIFETIME_SECONDS - REFRESH_BEFORE_SECONDS)
            return self._token[0]

    def forget(self) -> None:
        """Drop the kept token (after a SnapStart restore: it may have expired meanwhile)."""
        with self._lock:
            self._token = None
            forget = getattr(self._credentials, "forget", None)
            if forget is not None:
                forget()

    def get_credentials(self) -> tuple[str, str]:
        return self.user_id, self.token()

    async def get_credentials_async(self) -> tuple[str, str]:
        # Signing is a few HMACs; reading credentials from the chain may touch the container
        # endpoint once, when they are first needed or have expired: rare enough to do inline.
        return self.get_credentials()
