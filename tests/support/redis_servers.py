"""Private redis-server processes for the test session, on free loopback ports, so tests never
touch a Redis someone else runs: standalone, TLS, and a 3-master Redis Cluster."""

from __future__ import annotations

import atexit
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

MISSING = (
    "redis-server not found: install Debian's redis-server package "
    "(apt-get install redis-server redis-tools); the tests need a real Redis"
)
_live: list[subprocess.Popen[bytes]] = []


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(MISSING)
    return path


def free_port(also_free: int = 0) -> int:
    """A free loopback port; with `also_free`, one whose port + also_free is free too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if also_free == 0:
            return port
        if port + also_free > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + also_free))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port found")


def _stop_all() -> None:
    for proc in _live:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


atexit.register(_stop_all)


@dataclass
class RedisProcess:
    port: int
    workdir: Path
    extra_args: list[str] = field(default_factory=list)
    scheme: str = "redis"
    ca_path: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/0"

    def _client(self) -> redis.Redis:
        options: dict[str, object] = {"socket_timeout": 1.0}
        if self.ca_path:
            options["ssl_ca_certs"] = self.ca_path
        return redis.Redis.from_url(self.url, **options)

    def start(self) -> RedisProcess:
        args = [
            _binary("redis-server"), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.workdir), "--daemonize", "no", "--protected-mode", "no",
            "--logfile", str(self.workdir / "redis.log"),
        ]
        if self.scheme == "redis":
            args += ["--port", str(self.port)]
        self.proc = subprocess.Popen([*args, *self.extra_args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        _live.append(self.proc)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = (self.workdir / "redis.log")
                raise RuntimeError(
                    f"redis-server on port {self.port} exited: {err} "
                    f"{log.read_text()[-2000:] if log.exists() else ''}"
                )
            try:
                client = self._client()
                client.ping()
                client.close()
                return self
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port, empty (nothing is persisted)."""
        self.stop()
        self.start()


def start_standalone(workdir: Path) -> RedisProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    return RedisProcess(free_port(), workdir).start()


def _make_tls_material(workdir: Path) -> tuple[Path, Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl not found: install Debian's openssl package")
    ca_key, ca_crt = workdir / "ca.key", workdir / "ca.crt"
    key, csr, crt = workdir / "server.key", workdir / "server.csr", workdir / "server.crt"
    ext = workdir / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = [
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out",
         ca_crt, "-days", "2", "-subj", "/CN=orchestrator-flows test CA"],
        [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj",
         "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
         "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext],
    ]
    for command in run:
        subprocess.run([str(c) for c in command], check=True, capture_output=True)
    return ca_crt, crt, key


def start_tls(workdir: Path) -> RedisProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    ca, crt, key = _make_tls_material(workdir)
    port = free_port()
    tls = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(crt),
           "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
    return RedisProcess(port, workdir, tls, scheme="rediss", ca_path=str(ca)).start()


@dataclass
class RedisCluster:
    nodes: list[RedisProcess]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(workdir: Path, masters: int = 3, replicas: int = 0) -> RedisCluster:
    """A Redis Cluster of `masters` primaries, each with `replicas` replicas."""
    nodes = []
    for i in range(masters * (1 + replicas)):
        node_dir = workdir / f"node-{i}"
        node_dir.mkdir(parents=True, exist_ok=True)
        port = free_port(also_free=10000)  # the cluster bus listens on port + 10000
        nodes.append(RedisProcess(port, node_dir, [
            "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
            "--cluster-node-timeout", "5000",
        ]).start())
    subprocess.run(
        [_binary("redis-cli"), "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
         "--cluster-replicas", str(replicas), "--cluster-yes"],
        check=True, capture_output=True, timeout=60,
    )
    deadline = time.monotonic() + 30
    for node in nodes:
        client = node._client()
        while True:
            info = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" in text and "cluster_slots_assigned:16384" in text:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster did not become ready: {text}")
            time.sleep(0.1)
        client.close()
    if replicas:
        _wait_for_replicas(nodes[0], replicas, deadline)
    return RedisCluster(nodes)


def _wait_for_replicas(node: RedisProcess, replicas: int, deadline: float) -> None:
    """Replicas attach after `--cluster create` returns: wait until every primary has its own,
    in sync."""
    client = node._client()
    try:
        while True:
            shards = [_text(shard) for shard in client.execute_command(  # type: ignore[no-untyped-call]
                "CLUSTER", "SHARDS")]
            serving = [shard for shard in shards if shard["slots"]]
            ready = [sum(1 for n in shard["nodes"] if n["role"] == "replica"
                         and n["health"] == "online") for shard in serving]
            if serving and all(r == replicas for r in ready):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"replicas did not attach: {shards}")
            time.sleep(0.1)
    finally:
        client.close()


def _text(value: Any) -> Any:
    """CLUSTER SHARDS as redis-py parses it, with bytes made str."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value
