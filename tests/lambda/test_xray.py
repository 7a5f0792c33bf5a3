"""The X-Ray spans' own rules: only sampled invocations send, a span that raised is a fault,
and a daemon that is not there costs nothing."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from orchestrator_flows.settings import Settings
from orchestrator_flows.xray import TraceContext, XRaySpans

SAMPLED = "Root=1-6744e2a0-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1"


@pytest.fixture
def daemon() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.3)
    yield sock
    sock.close()


def received(daemon: socket.socket) -> list[dict[str, object]]:
    documents = []
    try:
        while True:
            header, body = daemon.recv(65536).split(b"\n", 1)
            assert json.loads(header) == {"format": "json", "version": 1}
            documents.append(json.loads(body))
    except TimeoutError:
        return documents


def test_only_a_sampled_header_with_its_ids_makes_a_context() -> None:
    assert TraceContext.of(SAMPLED) == TraceContext("1-6744e2a0-0123456789abcdef01234567",
                                                    "53995c3f42cd8ad8")
    for header in (None, "", SAMPLED.replace("Sampled=1", "Sampled=0"),
                   "Root=1-6744e2a0-0123456789abcdef01234567;Sampled=1"):
        assert TraceContext.of(header) is None


async def test_spans_of_an_unsampled_invocation_send_nothing(daemon: socket.socket) -> None:
    spans = XRaySpans(f"127.0.0.1:{daemon.getsockname()[1]}")
    spans.begin(SAMPLED.replace("Sampled=1", "Sampled=0"))
    assert spans.span("claim", {}) is None
    spans.begin(SAMPLED)
    span = spans.span("claim", {"call_identify_id": "C-1"})
    assert span is not None
    async with span:
        pass
    (document,) = received(daemon)
    assert (document["name"], document["annotations"]) == ("## claim", {"call_identify_id": "C-1"})
    assert "fault" not in document


async def test_a_span_that_raised_is_a_fault(daemon: socket.socket) -> None:
    spans = XRaySpans(f"127.0.0.1:{daemon.getsockname()[1]}")
    spans.begin(SAMPLED)
    span = spans.span("agent", {})
    assert span is not None
    with pytest.raises(RuntimeError):
        async with span:
            raise RuntimeError("the agent call broke")
    (document,) = received(daemon)
    assert document["fault"] is True


async def test_no_daemon_listening_is_no_error() -> None:
    from tests.support.redis_servers import free_port

    spans = XRaySpans(f"127.0.0.1:{free_port()}")
    spans.begin(SAMPLED)
    for _ in range(3):
        span = spans.span("commit", {})
        assert span is not None
        async with span:
            pass


async def test_the_daemon_s_two_address_form_sends_to_its_udp_address(
    daemon: socket.socket,
) -> None:
    port = daemon.getsockname()[1]
    address = f"tcp:127.0.0.1:{port + 1} udp:127.0.0.1:{port}"
    assert Settings(xray_daemon_address=address).xray_daemon_address == address
    spans = XRaySpans(address)
    spans.begin(SAMPLED)
    span = spans.span("claim", {})
    assert span is not None
    async with span:
        pass
    assert [document["name"] for document in received(daemon)] == ["## claim"]
