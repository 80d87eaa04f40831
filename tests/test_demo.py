"""``switchman demo``: the canary walk-through, run as a user runs it, leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controlplane.demo import binomial_interval
from tests.support import REPO

STEPS = ("100/0", "90/10", "50/50", "0/100")


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("SWITCHMAN_KEEP_WORKDIR", None)  # the demo decides whether to keep its workdir
    return env


def _workdir(output: str) -> Path:
    match = re.search(r"^workdir: (\S+)$", output, re.MULTILINE)
    assert match, output
    return Path(match.group(1))


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (the demo's unique workdir)."""
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if needle in cmdline:
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {shown}")
    return found


def test_binomial_interval() -> None:
    assert binomial_interval(1000, 0.0) == (0.0, 0.0)
    assert binomial_interval(1000, 1.0) == (1000.0, 1000.0)
    low, high = binomial_interval(1000, 0.1)
    assert 65 < low < 70 and 130 < high < 135
    low, high = binomial_interval(400, 0.5)
    assert low < 200 < high and high - low == pytest.approx(2 * 3.2905 * 10)


@pytest.mark.envoy
def test_demo_runs_the_canary_and_leaves_nothing_behind() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "controlplane", "demo", "--requests", "400"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    for step in STEPS:
        assert re.search(rf"^step \d\s+{re.escape(step)}\s.*: ok$", output, re.MULTILINE), output
    assert "switchman serve --config-dir" in output
    assert "switchman bootstrap" in output
    assert "Traceback" not in output
    wd = _workdir(output)
    assert _processes_mentioning(str(wd)) == []
    assert not wd.exists()


@pytest.mark.envoy
def test_demo_stops_its_children_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlplane", "demo", "--requests", "1000000"],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("control plane and Envoy up"):
                break
        output = "".join(lines)
        assert "control plane and Envoy up" in output, output
        wd = _workdir(output)
        assert _processes_mentioning(str(wd)), "the control plane and Envoy should be running"
        time.sleep(0.5)  # into step 0's requests
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    output += rest
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "terminated" in output
    assert "Traceback" not in output
    assert _processes_mentioning(str(wd)) == []
    assert not wd.exists()
