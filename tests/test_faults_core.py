"""The fault suite's own rules: a trial proves it ran, and a scenario that cannot run here
fails the run unless ACCESSD_FAULTS_ALLOW_PENDING=1 (docs/reliability.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faultsuite.core import Context, Pending, Result, Scenario, passed, run_one, table  # noqa: E402
from faultsuite.power import _check_coverage  # noqa: E402


def _run(body: object, tmp_path: Path, mode: str = "quick") -> Result:
    return run_one(Scenario("s", "inv", body, 1), Context(mode, 1, tmp_path))  # type: ignore[arg-type]


def test_a_scenario_that_ran_no_trial_fails(tmp_path: Path) -> None:
    r = _run(lambda ctx, res: None, tmp_path)
    assert r.status == "failed" and r.failed == ["the scenario ran no trial"]


def test_a_pending_scenario_fails_the_run_unless_allowed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def needs_root(ctx: Context, res: Result) -> None:
        raise Pending("cannot loop-mount a filesystem (needs root)")

    ok = _run(lambda ctx, res: setattr(res, "trials", 3), tmp_path)
    pending = _run(needs_root, tmp_path)
    assert (ok.status, pending.status) == ("ok", "pending")
    monkeypatch.delenv("ACCESSD_FAULTS_ALLOW_PENDING", raising=False)
    assert passed([ok]) and not passed([ok, pending])
    assert "result: FAIL" in table([ok, pending])
    assert "NOT allowed" in table([ok, pending])
    monkeypatch.setenv("ACCESSD_FAULTS_ALLOW_PENDING", "1")
    assert passed([ok, pending])
    assert "allowed by ACCESSD_FAULTS_ALLOW_PENDING=1" in table([ok, pending])
    assert "result: PASS" in table([ok, pending])


def test_power_cuts_must_land_mid_operation_and_show_both_outcomes(tmp_path: Path) -> None:
    counts = {"taps": 170, "rules": 170, "purge": 170}
    long, quick = Context("long", 1, tmp_path), Context("quick", 1, tmp_path)

    def failures(ctx: Context, mid: dict[str, int], outcome: dict[str, int]) -> list[str]:
        res = Result("power_cut", "inv")
        _check_coverage(ctx, res, counts if ctx.long else {k: 8 for k in counts}, mid, outcome)
        return res.failed

    assert failures(long, {"rules": 170, "purge": 100}, {"old": 160, "new": 10}) == []
    assert failures(long, {"rules": 170, "purge": 29}, {"old": 164, "new": 6}) == [
        "only 29 of 170 purge kills landed while the operation was running (need 50%)"]
    assert failures(long, {"rules": 170, "purge": 170}, {"old": 170, "new": 0}) == [
        "rules after the cut {'old': 170, 'new': 0}: both the old and the new set must occur"]
    assert failures(quick, {"rules": 8, "purge": 1}, {"old": 8, "new": 0}) == []
    assert len(failures(quick, {"rules": 0, "purge": 8}, {"old": 8, "new": 0})) == 1
