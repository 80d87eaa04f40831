"""The propagation benchmark's harness, at tiny scale: it must see every edit, and fail nothing.

Times are not asserted (DESIGN.md §7); what is checked is that the harness measures what it says:
every edit observed on every Envoy with a finite latency and a sane bound, the control plane
having translated, and zero failed requests from the clients.
"""

from __future__ import annotations

import math

import pytest

from benchmarks.propagation import STREAK, PhaseResult, Settings, report_body, run

pytestmark = [pytest.mark.envoy, pytest.mark.slow]


def check_phase(r: PhaseResult, envoys: int) -> None:
    assert r.edits > 0
    assert r.timeouts == 0, r
    assert len(r.samples) == r.edits * envoys
    assert {(x.edit, x.envoy) for x in r.samples} == {
        (e, k) for e in range(r.edits) for k in range(envoys)
    }
    for x in r.samples:
        assert math.isfinite(x.latency)
        assert 0 <= x.lower <= x.latency
        assert x.polls >= STREAK  # the 20 consecutive answers, and any before them
    assert r.counters.requests["edited routes"] >= len(r.samples) * STREAK
    assert dict(r.counters.failures) == {}
    assert dict(r.counters.wrong) == {}
    assert r.metrics["translations"].get("ok", 0) >= 1
    assert r.envoys_alive
    # Each Envoy counted exactly the requests sent on the connections pinned to it.
    assert r.pinning_ok, (r.sent_to, r.seen_by, r.counters.unattributed)


@pytest.mark.timeout(600)
def test_harness_sees_every_edit_with_no_failed_request() -> None:
    settings = Settings(
        routes=20,
        envoys=1,
        edits=2,
        warmup=0,
        protocols=("delta", "sotw"),
        churn_routes=20,
        churn_seconds=2.0,
        churn_rate=5.0,
        churn_envoys=1,
        backends=3,
        gap=0.05,
        edit_timeout=60.0,
    )
    res = run(settings)

    assert set(res.sequential) == {"delta", "sotw"}
    for r in res.sequential.values():
        check_phase(r, 1)
        assert r.edits == 2
        # The control plane published once per edit, and the log says when.
        assert len(r.publish) == 2
    assert res.churn is not None
    check_phase(res.churn, 1)
    assert res.churn.counters.requests["unedited route"] > 0

    body = report_body(res, None)
    assert "no verdict" in body  # tiny scale: the targets are not judged
    assert "sequential (delta)" in body and "churn (delta)" in body
