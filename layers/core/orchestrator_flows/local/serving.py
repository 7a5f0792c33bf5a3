"""Serving ASGI apps with uvicorn: `serve` for the `serve` command, and `serving` inside a
running loop on a free loopback port (the demo's agents and API, the tests' servers)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

from orchestrator_flows.settings import Settings

logger = logging.getLogger("orchestrator_flows")

# What uvicorn can bound (a proxy in front bounds the rest: see `serve --help`): idle
# keep-alive connections, concurrent connections, the size of a request's head.
KEEP_ALIVE_SECONDS = 5
MAX_CONNECTIONS = 1000
MAX_HEAD_BYTES = 16 * 1024


class PortTaken(Exception):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"port {port} on {host} is already in use (is it already running?); "
                         "stop that server or choose another port")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket's address, taken now (0: any free port); PortTaken when it is in
    use."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortTaken(host, port) from None
        raise
    return sock


def _free_socket(host: str = "127.0.0.1") -> socket.socket:
    return bind(host, 0)


def serve(settings: Settings, host: str, port: int) -> int:
    """The `serve` command: configuration and the flow file checked, the store and every
    agent said, before the port is bound; then uvicorn until Ctrl-C."""
    import uvicorn

    from orchestrator_flows.api import create_app
    from orchestrator_flows.runtime import Runtime, tune_collector

    runtime = Runtime.build(settings)  # a broken flow file never starts
    flow = runtime.turns.flow
    logger.info("session store: %s", _store_of(settings))
    logger.info("archive: %s", f"DynamoDB table {settings.archive_table} (calls are scheduled "
                "for it; the sweeper archives them)" if settings.archive_table else
                "off (ARCHIVE_TABLE is not set): calls live only as long as the session store "
                "keeps them")
    logger.info("flow %s: %d stages, %d agents", flow.source, len(flow.stages), len(flow.agents))
    for agent in flow.agents.values():
        reachable = _reachable(agent.url)
        logger.log(logging.INFO if reachable else logging.WARNING, "  agent %-9s %s%s",
                   agent.name, agent.url, "" if reachable else
                   "  NOT REACHABLE (for the demo agents: orchestrator-flows agents)")
    sock = bind(host, port)
    logger.info("API at http://%s:%d/ (OpenAPI at /docs); liveness /healthz, readiness "
                "/readyz", host, port)
    app = create_app(runtime)
    tune_collector()
    uvicorn.run(app, fd=sock.fileno(), log_level="info",
                timeout_keep_alive=KEEP_ALIVE_SECONDS, limit_concurrency=MAX_CONNECTIONS,
                h11_max_incomplete_event_size=MAX_HEAD_BYTES)
    sock.close()
    return 0


def _store_of(settings: Settings) -> str:
    if settings.redis_url is None:
        return "embedded in-memory (REDIS_URL is not set; sessions are lost on exit)"
    parts = urlsplit(settings.redis_url)
    where = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"
    return f"Redis {settings.redis_mode} at {where}"  # never the password


def _reachable(url: str, timeout: float = 0.3) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.asynccontextmanager
async def serving(make_app: Callable[[str], Any], **tls: Any) -> AsyncIterator[str]:
    """Serve `make_app(base_url)` with uvicorn on a free loopback port in this loop (the app
    learns its own URL first: an agent card names it); yields the base URL. `tls`: uvicorn's
    `ssl_*` options, served over https."""
    import uvicorn

    sock = _free_socket()
    port = sock.getsockname()[1]
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
    server = uvicorn.Server(uvicorn.Config(
        make_app(url), log_level="warning", lifespan="off", timeout_graceful_shutdown=1, **tls
    ))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield url
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=5)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()  # a handler that never returns must not hold the shutdown
        sock.close()
