"""What masking costs a step, at worst: an agent answer of the client's largest size (1 MiB)
built to be slow to mask, through what the engine keeps of it (`engine._masked`: text cut to
16 KiB, data over 64 KiB omitted, both masked), and a caller's largest input (32,000 characters)
through `Masker.mask`; in AUTHENTICATION (codes masked too) and elsewhere.

    .venv/bin/python bench/masking_cost.py          # median of 5 runs; writes MASKING.md
    .venv/bin/python bench/masking_cost.py --quick  # one run, prints only

No timed assertion lives in the tests; this is where the figure is read.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from orchestrator_flows.engine import _masked
from orchestrator_flows.masking import Masker
from orchestrator_flows.records import AgentResponse

MASKER = Masker()
ANSWER = 1 << 20
INPUT = 32_000
# Text shaped to make each rule work hardest: digit groups that look like cards and codes,
# spoken digits, near-addresses, and ordinary prose with the odd secret.
PATTERNS: dict[str, str] = {
    "groups of four": "4111 ",
    "groups of five": "12345 ",
    "spoken digits": "1 ",
    "dashed digits": "1-",
    "one long number": "7",
    "near e-mails": "a.b@c.",
    "long words, cut": "x" * 16_000 + " y ",
    "long numbers, cut": "1" * 16_000 + " y ",
    "prose with secrets": "my card 4111 1111 1111 1111 and code 482913 at 10:30 on "
                          "2026-11-25 email a@b.co ",
}


def timed(work: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    runs = 1 if quick else 5
    lines = ["# What masking costs a step, at worst", "",
             "`.venv/bin/python bench/masking_cost.py`: an agent answer of 1 MiB built to be "
             "slow to mask, through what the engine keeps of it (text cut to 16 KiB, data over "
             "64 KiB omitted; here a 32,000-character data string), and a caller input of "
             f"32,000 characters; median of {runs} runs, one core of a shared 2-core machine.",
             "", "| pattern | stage | agent answer of 1 MiB, ms | caller input of 32,000, ms |",
             "|---|---|---|---|"]
    for name, unit in PATTERNS.items():
        answer_text = (unit * (ANSWER // len(unit) + 1))[:ANSWER]
        caller_text = answer_text[:INPUT]
        for stage in ("INTENT_CAPTURE", "AUTHENTICATION"):
            response = AgentResponse(
                agent="bench", text=answer_text, data={"note": caller_text}, state=None,
                task_id=None, context_id=None, error=None, latency_ms=1.0)
            agent_ms = timed(partial(_masked, response, MASKER, stage, "ctx-bench"), runs)
            caller_ms = timed(partial(MASKER.mask, caller_text, stage), runs)
            lines.append(f"| {name} | {stage} | {agent_ms:.1f} | {caller_ms:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not quick:
        (Path(__file__).parent / "MASKING.md").write_text(text)


if __name__ == "__main__":
    main()
