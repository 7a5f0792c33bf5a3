"""X-Ray subsegments for a turn's spans, sent to the X-Ray daemon without the X-Ray SDK.

In Lambda with active tracing, Lambda records the function's segment and hands each invocation
its trace header (`Root=…;Parent=…;Sampled=…`); what the function adds are subsegments of that
segment, sent as UDP datagrams to the daemon (`AWS_XRAY_DAEMON_ADDRESS`), which the SDK does
too. The SDK (in maintenance, end of support February 2027) imports botocore: about 170 ms of
every cold start for three spans. This sends the same documents in a few dozen lines.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

HEADER = b'{"format": "json", "version": 1}\n'
DEFAULT_DAEMON = "127.0.0.1:2000"


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    parent_id: str

    @classmethod
    def of(cls, header: str | None) -> TraceContext | None:
        """The context of a sampled trace header, or None (no header, or not sampled)."""
        if not header:
            return None
        fields = dict(part.split("=", 1) for part in header.split(";") if "=" in part)
        if fields.get("Sampled") != "1" or "Root" not in fields or "Parent" not in fields:
            return None
        return cls(fields["Root"], fields["Parent"])


class XRaySpans:
    """Subsegments of the current invocation's segment; `begin` is told each invocation's
    trace header. Sending never raises: a lost datagram is a lost span, not a failed turn."""

    def __init__(self, daemon_address: str = DEFAULT_DAEMON) -> None:
        # `host:port`, or the daemon's own `tcp:host:port udp:host:port` (its UDP one here).
        udp = [part[4:] for part in daemon_address.split() if part.startswith("udp:")]
        host, _, port = (udp[0] if udp else daemon_address).rpartition(":")
        self._daemon = (host or "127.0.0.1", int(port))
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self.context: TraceContext | None = None

    def begin(self, trace_header: str | None) -> None:
        self.context = TraceContext.of(trace_header)

    def span(self, name: str, annotations: dict[str, str]) -> _Span | None:
        """A span to enter, or None when this invocation is not sampled."""
        if self.context is None:
            return None
        return _Span(self, self.context, name, annotations)

    def send(self, document: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self._socket.sendto(HEADER + json.dumps(document).encode(), self._daemon)


class _Span:
    def __init__(self, spans: XRaySpans, context: TraceContext, name: str,
                 annotations: dict[str, str]) -> None:
        self.spans, self.context, self.name, self.annotations = spans, context, name, annotations
        self.started = 0.0

    async def __aenter__(self) -> None:
        self.started = time.time()

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        document: dict[str, Any] = {
            "name": f"## {self.name}", "id": secrets.token_hex(8), "type": "subsegment",
            "trace_id": self.context.trace_id, "parent_id": self.context.parent_id,
            "start_time": self.started, "end_time": time.time(),
            "annotations": self.annotations,
        }
        if kind is not None:
            document["fault"] = True
        self.spans.send(document)
