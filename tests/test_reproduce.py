"""`advx reproduce goodfellow2015 scale=smoke`: the whole pipeline on synthetic data, its caching and its report."""

from __future__ import annotations

import json

from advx.pipeline import Claim, judge

SMOKE = ["scale=smoke", "runtime=cpu", "runtime.progress=false"]
STATUSES = {"reproduced", "deviates", "not_run"}


def test_goodfellow2015_smoke_pipeline_writes_the_report_and_reuses_stages(advx, workdir):
    out = workdir / "repro"
    result = advx("reproduce", "goodfellow2015", *SMOKE, f"hydra.run.dir={out}")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["paper"] == "goodfellow2015" and report["scale"] == "smoke" and report["device"] == "cpu"
    ids = {c["id"] for c in report["claims"]}
    assert {"maxout_fgsm_error", "adv_fgsm_error", "transfer_from_adv_error", "rubbish_rbf_error",
            "logistic_closed_form_gap", "ensemble_attacked_error", "l1_train_error"} <= ids
    for claim in report["claims"]:
        assert claim["status"] in STATUSES
        assert claim["criterion"] and claim["reason"]
        if claim["status"] == "not_run":
            assert claim["measured"] is None and claim["note"]
    by_id = {c["id"]: c for c in report["claims"]}
    assert by_id["logistic_closed_form_gap"]["measured"] < 1e-3  # FGSM on a linear model is the closed form
    assert by_id["rubbish_rbf_error"]["measured"] == 0.0
    assert by_id["large_clean_error"]["status"] == "not_run"
    for figure in ("error_vs_eps.png", "logit_trace.png"):
        assert (out / figure).stat().st_size > 1000
        assert f"]({figure})" in (out / "report.md").read_text()
    stage_dirs = sorted(p.name for p in (out / "stages").iterdir())
    assert any(name.startswith("maxout_adv-") for name in stage_dirs)

    again = advx("reproduce", "goodfellow2015", *SMOKE, f"hydra.run.dir={out}")
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in (out / "stages").iterdir()) == stage_dirs  # nothing new was trained
    assert "Ran: none." in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["claims"] == report["claims"]

    changed = advx("reproduce", "goodfellow2015", *SMOKE, "paper.scales.smoke.rbf_epochs=3", f"hydra.run.dir={out}")
    assert changed.exit_code == 0, changed.output
    assert "Ran: rbf, fgsm_rbf." in (out / "report.md").read_text()  # one knob reruns only what it touches


def test_seed_sweep_reports_mean_and_std(advx, workdir):
    sweep = workdir / "seeds"
    result = advx("reproduce", "goodfellow2015", "-m", *SMOKE, "seed=0,1", "paper.scales.smoke.ensemble_members=1",
                  f"hydra.sweep.dir={sweep}")
    assert result.exit_code == 0, result.output
    report = json.loads((sweep / "report.json").read_text())
    assert report["seeds"] == [0, 1]
    measured = [c for c in report["claims"] if c["measured"] is not None]
    assert measured and all(len(c["runs"]) == 2 and c["std"] is not None for c in measured)
    assert "±" in (sweep / "report.md").read_text()
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert jobs == ["0-seed0", "1-seed1"]


def test_unknown_paper_is_one_clear_error(advx):
    result = advx("reproduce", "nobody2099")
    assert result.exit_code == 2
    assert "unknown paper option 'nobody2099'" in result.stderr and "goodfellow2015" in result.stderr


def test_criteria_are_judged_as_written():
    def claim(criterion, measured, paper=0.5):
        return Claim("c", "", "", paper, criterion, "", measured=measured)

    assert judge(claim(">= 0.95", 0.95), {}) == "reproduced"
    assert judge(claim(">= 0.95", 0.949), {}) == "deviates"
    assert judge(claim("within 0.1", 0.59), {}) == "reproduced"
    assert judge(claim("within 0.1", 0.61), {}) == "deviates"
    assert judge(claim("> claim:other", 0.4), {"other": 0.2}) == "reproduced"
    assert judge(claim("> claim:other", 0.1), {"other": 0.2}) == "deviates"
    assert judge(claim("<= 0.0", None), {}) == "not_run"


def test_ilyas2019_smoke_pipeline_builds_the_four_datasets_and_reports_every_claim(advx, workdir):
    out = workdir / "ilyas"
    result = advx("reproduce", "ilyas2019", *SMOKE, f"hydra.run.dir={out}")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    by_id = {c["id"]: c for c in report["claims"]}
    assert {"dr_robust_gain", "dnr_clean_acc", "drand_minus_ddet", "ddet_next_label_acc", "reload_success_gap",
            "gaussian_condition_ratio"} <= set(by_id)
    for claim in report["claims"]:
        assert claim["status"] in STATUSES and claim["measured"] is not None  # every claim is measured at smoke
    assert by_id["reload_success_gap"]["measured"] <= 1e-3  # what was built is what is stored
    assert 0 <= by_id["ddet_success"]["measured"] <= 1
    for gaussian in ("gaussian_condition_ratio", "gaussian_alignment_robust", "gaussian_monotone"):
        assert by_id[gaussian]["status"] == "reproduced"  # exact numerics: no training noise at any scale
    markdown = (out / "report.md").read_text()
    for figure in ("samples.png", "gaussian.png"):
        assert (out / figure).stat().st_size > 1000 and f"]({figure})" in markdown
    assert "| D_R (standard training) |" in markdown and "| D_det (standard training) |" in markdown
    assert "| D_det built from the robust model |" in markdown
    stages = {p.name.rsplit("-", 1)[0] for p in (out / "stages").iterdir()}
    assert {"source_standard", "source_robust", "construct_robust", "construct_nonrobust", "construct_drand",
            "construct_ddet", "construct_ddet_from_robust", "train_ddet", "reload_ddet", "pgd10_D_R"} <= stages

    again = advx("reproduce", "ilyas2019", *SMOKE, f"hydra.run.dir={out}")
    assert again.exit_code == 0, again.output
    assert "Ran: none." in (out / "report.md").read_text()
