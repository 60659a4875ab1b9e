"""docs/cli.md's host's morning is what accessd prints: run it again and compare."""

from __future__ import annotations

from pathlib import Path

from host_transcript import DOC, doc_block, normalise, run_morning


def test_the_host_s_morning_in_the_docs_is_what_accessd_prints(tmp_path: Path) -> None:
    fresh = run_morning(tmp_path)
    documented = doc_block(DOC.read_text(encoding="utf-8"))
    assert normalise(documented) == normalise(fresh), (
        "docs/cli.md's host's morning is stale: run scripts/host-transcript --write\n" + fresh)
    for command in ("enroll --name \"Louis Martin\" --plan occasional --present",
                    "why claire", "suspend bob", "log --since today", "doctor"):
        assert f"$ accessd {command}\n" in documented
    assert str(tmp_path) not in fresh  # shown as the installed paths


def test_the_normalisation_keeps_what_matters() -> None:
    a = "Claire Petit was refused at 09:12 CET because their membership ended on 2025-12-31"
    assert normalise(a) == normalise(a.replace("09:12 CET", "17:40 CEST"))
    assert normalise(a) != normalise(a.replace("refused", "let in"))
    assert normalise("suspended m-850d827ce0 (Bob Durand)") != \
        normalise("suspended m-850d827ce0 (Bobby Tables)")
