"""Instructions per step of each server, counted by valgrind's callgrind: the same on a busy
machine as on an idle one, so a ratio of two servers is steady where CPU time is not.

    .venv/bin/python bench/instructions.py     # orchestrator and both floors, ~15 min;
                                               # writes bench/INSTRUCTIONS.md

Each server runs under callgrind twice, serving `FEW` then `MANY` steps at concurrency 8 (after
the same warm-up); what it executed per step is the difference divided by `MANY - FEW`, so
start-up and import cost cancel out. The stub agent and Redis run outside valgrind. Needs
`valgrind` (Debian's package); it is not part of the CI run.
"""

from __future__ import annotations

import asyncio
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.step_bench import load  # noqa: E402
from tests.support.redis_servers import free_port, start_standalone  # noqa: E402

FEW, MANY = 80, 400
TARGETS = ("orchestrator", "floor-aiohttp", "floor")


def start(args: list[str], callgrind_out: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    command = [sys.executable, str(ROOT / "bench" / "_servers.py"), args[0], str(port), *args[1:]]
    if callgrind_out is not None:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind_out}",
                   *command]
    proc = subprocess.Popen(command, cwd=ROOT, text=True,
                            stderr=subprocess.PIPE if callgrind_out else None)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # imports under valgrind take a while
    while True:
        try:
            httpx.get(url + "/", timeout=5)
            return proc, url
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not start") from None
            time.sleep(0.5)


def executed(target: str, redis_url: str, agent_url: str, steps: int, workdir: Path) -> int:
    """Instructions the server executed in all, having served `steps` steps."""
    proc, url = start([target, redis_url, agent_url], workdir / f"{target}-{steps}.out")
    asyncio.run(load(url, 8, 5, f"warm-{steps}"))
    asyncio.run(load(url, 8, steps // 8, f"count-{steps}"))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    found = re.search(r"Collected : (\d+)", err)
    if found is None:
        raise RuntimeError(f"callgrind reported no count for {target}:\n{err[-2000:]}")
    return int(found.group(1))


def main() -> None:
    targets = list(TARGETS)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found: install Debian's valgrind package")
    workdir = Path(tempfile.mkdtemp(prefix="instructions-"))
    redis_server = start_standalone(workdir)
    stub, stub_url = start(["stub"])
    per_step: dict[str, float] = {}
    try:
        for target in targets:
            few = executed(target, redis_server.url, stub_url + "/", FEW, workdir)
            many = executed(target, redis_server.url, stub_url + "/", MANY, workdir)
            per_step[target] = (many - few) / (MANY - FEW)
            print(f"{target}: {per_step[target] / 1000:,.0f} k instructions/step", flush=True)
    finally:
        stub.terminate()
        redis_server.stop()
    lines = ["# Instructions per step", "",
             f"`.venv/bin/python bench/instructions.py` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
             f"Python {platform.python_version()}, the stub agent; each server under callgrind, "
             f"{MANY} steps less {FEW} at concurrency 8.", "",
             "| server | k instructions/step | orchestrator / it |", "|---|---|---|"]
    for target, count in per_step.items():
        lines.append(f"| {target} | {count / 1000:,.0f} | "
                     f"{per_step['orchestrator'] / count:.2f}× |")
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "bench" / "INSTRUCTIONS.md").write_text(text)


if __name__ == "__main__":
    main()
