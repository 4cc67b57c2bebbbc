"""`advx reproduce li2023 scale=smoke`: every paradigm trained, probed and controlled on D, D_R and D_NR, the
robustness and transfer analyses, on the stages ilyas2019 builds (the same names and overrides)."""

from __future__ import annotations

import json

from tests.test_reproduce import SMOKE, report_of

PARADIGMS = ("sl", "simclr", "mae", "ddpm")


def test_li2023_smoke_pipeline_reports_every_claim(advx, workdir):
    out = workdir / "li"
    result = advx("reproduce", "li2023", *SMOKE, f"hydra.run.dir={out}")
    assert result.exit_code == 0, result.output
    report = report_of(out)
    by_id = {c["id"]: c for c in report["claims"] + report["checks"]}
    assert all(c["measured"] is not None for c in by_id.values()), [c for c in by_id.values() if c["measured"] is None]
    assert all(c["status"] == "inconclusive" for c in report["claims"])  # smoke judges no claim of the paper
    names = {s["name"] for s in report["stages"]}
    for paradigm in PARADIGMS:
        for dataset in ("D", "D_R", "D_NR"):
            assert {f"{paradigm}_{dataset}", f"probe_{paradigm}_{dataset}", f"control_{paradigm}_{dataset}"} <= names
    assert {"source_standard", "source_robust", "construct_robust", "construct_nonrobust", "pgd10_sl_D_R",
            "autoattack_sl_D_R", "autoattack_source_robust"} <= names
    markdown = (out / "report.md").read_text()
    for figure in ("usefulness.png", "transfer.png"):
        assert (out / figure).stat().st_size > 1000 and f"]({figure})" in markdown
    assert "| DDPM (diffusion) |" in markdown and "AutoAttack" in markdown
    losses = json.loads((out / "li2023.json").read_text())["transfer"]["losses"]
    assert losses["ce_attack"]["ce"] > losses["clean"]["ce"]  # each attack raises the loss it ascends
    assert losses["infonce_attack"]["infonce"] > losses["clean"]["infonce"]

