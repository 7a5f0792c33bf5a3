"""Real a2a-sdk agents behind an authentication check, a local OAuth 2.0 token endpoint that
counts its calls, a throwaway certificate authority for mutual TLS, and secrets in moto's
Secrets Manager and SSM."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass
class Gate:
    """What an agent accepts: header values (any one of `accepted` under `header`, checked
    case-insensitively by name); every refusal and every credential seen is counted."""

    header: str = "authorization"
    accepted: set[str] = field(default_factory=set)
    refusals: int = 0
    seen: list[str] = field(default_factory=list)

    def guard(self, app: ASGIApp) -> ASGIApp:
        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["method"] == "POST":
                headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
                given = headers.get(self.header.lower(), "")
                self.seen.append(given)
                if given not in self.accepted:
                    self.refusals += 1
                    refusal = JSONResponse({"error": "unauthorized"}, status_code=401,
                                           headers={"www-authenticate": "Bearer"})
                    await refusal(scope, receive, send)
                    return
            await app(scope, receive, send)

        return guarded


@dataclass
class TokenEndpoint:
    """RFC 6749 §4.4 client credentials: HTTP Basic client authentication, a new token per
    request, `expires_in` as set; the gate of the agent it serves accepts what it issued."""

    client_id: str
    client_secret: str
    gate: Gate
    expires_in: int = 3600
    calls: int = 0
    forms: list[dict[str, str]] = field(default_factory=list)
    _serial: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> Starlette:
        async def token(request: Request) -> JSONResponse:
            self.calls += 1
            form = dict(parse_qsl((await request.body()).decode(), strict_parsing=True))
            self.forms.append(form)
            expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode())
            if request.headers.get("authorization") != "Basic " + expected.decode():
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            if form.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            issued = f"tok-{next(self._serial)}-{self.client_id}"
            self.gate.accepted.add("Bearer " + issued)
            return JSONResponse({"access_token": issued, "token_type": "Bearer",
                                 "expires_in": self.expires_in})

        return Starlette(routes=[Route("/token", token, methods=["POST"])])


@dataclass(frozen=True)
class Pki:
    """A throwaway CA, a server certificate for 127.0.0.1, a client certificate it signed, and a
    client certificate from another CA (which the agent must refuse)."""

    ca: str
    server_cert: Path
    server_key: Path
    ca_file: Path
    client: dict[str, str]  # the secret's JSON: certificate, private_key, ca_certificate
    rogue_client: dict[str, str]


def make_pki(directory: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def authority(common: str) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(common)).issuer_name(name(common))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False),
                    critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(common: str, signer: tuple[Any, Any], server: bool) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        ca_key, ca_cert = signer
        builder = (x509.CertificateBuilder().subject_name(name(common))
                   .issuer_name(ca_cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.SERVER_AUTH if server
                        else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       ca_key.public_key()), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return (cert.public_bytes(serialization.Encoding.PEM).decode(),
                key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode())

    ca = authority("orchestrator-flows test CA")
    rogue = authority("someone else's CA")
    ca_pem = ca[1].public_bytes(serialization.Encoding.PEM).decode()
    server_cert, server_key = leaf("127.0.0.1", ca, server=True)
    client_cert, client_key = leaf("orchestrator", ca, server=False)
    rogue_cert, rogue_key = leaf("orchestrator", rogue, server=False)
    paths = {"server_cert": server_cert, "server_key": server_key, "ca_file": ca_pem}
    for file, text in paths.items():
        (directory / f"{file}.pem").write_text(text)
    return Pki(
        ca=ca_pem, server_cert=directory / "server_cert.pem",
        server_key=directory / "server_key.pem", ca_file=directory / "ca_file.pem",
        client={"certificate": client_cert, "private_key": client_key, "ca_certificate": ca_pem},
        rogue_client={"certificate": rogue_cert, "private_key": rogue_key,
                      "ca_certificate": ca_pem},
    )


def secret_json(value: dict[str, str]) -> str:
    return json.dumps(value)
