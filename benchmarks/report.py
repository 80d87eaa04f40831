"""Shared helpers: machine facts, medians, and replacing one section of ``docs/benchmarks.md``.

Each benchmark owns one section, delimited by ``<!-- bench:NAME -->`` … ``<!-- /bench:NAME -->``;
rewriting it leaves the header and the other sections alone.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path

from controlplane.localrun import find_envoy

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"

HEADER = """\
# Benchmarks

Figures from the benchmarks in `benchmarks/`. Each benchmark is one command, run from the
repository root with the project's virtualenv; it prints its figures and rewrites only its own
section below (between `<!-- bench:NAME -->` markers), recording the date and the machine.
Tests never assert on wall-clock time (DESIGN.md §7); these numbers are for reading, not gating.

- Translation pipeline, 1,000 and 10,000 IngressRoutes (~1-2 min):
  `.venv/bin/python -m benchmarks.translate`
- Envoy latency, 10,000-route vs 10-route table in one Envoy (~2-3 min):
  `.venv/bin/python -m benchmarks.route_latency` (uses `wrk` too if it is on PATH)
- Envoy throughput through a five-middleware chain vs none (~1 min):
  `.venv/bin/python -m benchmarks.middleware_chain` (uses `wrk` if it is on PATH)
- Propagation, file edit → 10 real Envoys serving it, 3,000 routes; and under churn (20 edits/s
  over 5,000 routes for a minute) (~6-8 min): `.venv/bin/python -m benchmarks.propagation`
  (`--quick` for a small validation run)
- ADS fan-out, 1,000 streams from a `grpc.aio` load client, one change to all (~2 min):
  `.venv/bin/python -m benchmarks.fanout`
- Control-plane memory at 1,000 and 10,000 routes (~2 min): `.venv/bin/python -m benchmarks.memory`

Options: `python -m benchmarks.translate --sizes 1000 10000 --runs 3`;
`python -m benchmarks.route_latency --rounds 6 --seconds 3 --workers 2 [--no-wrk]`.
`--no-write` on either prints without touching this file.
"""


def envoy_version() -> str:
    try:
        out = subprocess.run(
            [find_envoy(), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    m = re.search(r"version:\s*\S+?/([0-9][^/]*)/", out)
    return m.group(1) if m else out.strip() or "unknown"


def nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 0


def machine_line() -> str:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Run {now} on {platform.machine()} Linux, nproc={nproc()}, "
        f"Python {platform.python_version()}, Envoy {envoy_version()}."
    )


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def percentile(sorted_xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_xs:
        return float("nan")
    k = max(0, min(len(sorted_xs) - 1, round(q / 100 * len(sorted_xs) + 0.5) - 1))
    return sorted_xs[k]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section ``name`` of ``doc``, keeping everything else."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = doc.read_text(encoding="utf-8") if doc.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")
    print(f"wrote section {name!r} of {doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc}")
