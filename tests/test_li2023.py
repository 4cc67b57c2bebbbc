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
    autoattack = {"dr_autoattack_vs_source", "pgd_overstates", "autoattack_not_weaker_source_robust",
                  "autoattack_not_weaker_sl_D_R"}
    for claim in by_id.values():  # every claim measured, or (AutoAttack's, until it is built) not run, saying why
        assert claim["measured"] is not None or (claim["id"] in autoattack and "autoattack" in claim["note"]), claim
    assert all(c["status"] in ("inconclusive", "not_run") for c in report["claims"])  # smoke judges no claim
    names = {s["name"] for s in report["stages"]}
    for paradigm in PARADIGMS:
        for dataset in ("D", "D_R", "D_NR"):
            assert {f"{paradigm}_{dataset}", f"probe_{paradigm}_{dataset}", f"control_{paradigm}_{dataset}"} <= names
    assert {"source_standard", "source_robust", "construct_robust", "construct_nonrobust", "pgd10_sl_D_R"} <= names
    markdown = (out / "report.md").read_text()
    for figure in ("usefulness.png", "transfer.png"):
        assert (out / figure).stat().st_size > 1000 and f"]({figure})" in markdown
    assert "| DDPM (diffusion) |" in markdown and "AutoAttack" in markdown
    losses = json.loads((out / "li2023.json").read_text())["transfer"]["losses"]
    assert losses["ce_attack"]["ce"] > losses["clean"]["ce"]  # each attack raises the loss it ascends
    assert losses["infonce_attack"]["infonce"] > losses["clean"]["infonce"]

