"""`advx reproduce`: the pipelines on synthetic data, the stage store's reuse and invalidation, and the verdicts."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from omegaconf import OmegaConf

from advx import provenance, stages
from advx.claims import Claim, Measurement, inconclusive, judge, load_claims, not_run, rate, settle, t_interval
from advx.errors import ConfigError

SMOKE = ["scale=smoke", "runtime=cpu", "runtime.progress=false"]
SMALL = [*SMOKE, "paper.scales.smoke.ensemble_members=1"]


def report_of(out):
    return json.loads((out / "report.json").read_text())


def ran(report) -> set[str]:
    return {s["name"] for s in report["stages"] if s["ran"]}


def test_goodfellow2015_smoke_reports_no_verdicts_and_reruns_exactly_what_changed(advx, workdir):
    out = workdir / "repro"
    result = advx("reproduce", "goodfellow2015", *SMALL, f"hydra.run.dir={out}")
    assert result.exit_code == 0, result.output
    report = report_of(out)
    assert (report["paper"], report["scale"], report["device"], report["verdicts"]) == ("goodfellow2015", "smoke",
                                                                                        "cpu", False)
    by_id = {c["id"]: c for c in report["claims"]}
    assert {"maxout_fgsm_error", "adv_fgsm_error", "transfer_from_adv_error", "rubbish_rbf_error",
            "ensemble_attacked_error", "l1_train_error"} <= set(by_id)
    # synthetic data: every measured claim is left unjudged, every unmeasured one says why
    assert {c["status"] for c in report["claims"] if c["measured"] is not None} == {"inconclusive"}
    assert by_id["large_clean_error"]["status"] == "not_run" and "scale=paper" in by_id["large_clean_error"]["note"]
    # early stopping on the validation split keeps each model's best epoch, by the recipe's criterion
    assert re.match(r"kept epoch [12] of [12] \(lowest val_error\);", by_id["maxout_clean_error"]["note"])
    assert re.match(r"kept epoch [12] of [12] \(lowest val_adv_error\);", by_id["adv_clean_error"]["note"])
    # checks are judged at every scale and counted apart: FGSM on a linear model is the closed form
    assert [c["id"] for c in report["checks"]] == ["logistic_closed_form_gap"]
    assert report["checks"][0]["status"] == "reproduced" and report["counts"]["checks"]["reproduced"] == 1
    assert report["counts"]["claims"]["reproduced"] == report["counts"]["claims"]["deviates"] == 0
    rubbish = by_id["rubbish_rbf_error"]  # a Monte Carlo rate carries its Clopper-Pearson interval
    assert rubbish["low"] <= rubbish["measured"] < rubbish["high"] < 0.01
    markdown = (out / "report.md").read_text()
    assert "Criteria were fixed before measuring" not in markdown and "not judged" in markdown
    for figure in ("error_vs_eps.png", "logit_trace.png"):
        assert (out / figure).stat().st_size > 1000 and f"]({figure})" in markdown
    # where the time went: every second in one section, the sections adding up to the invocation's time
    sections = report["time_seconds"]
    assert {"train stages that ran", "attack stages that ran", "figures", "analysis: ensemble"} <= set(sections)
    assert sum(sections.values()) == pytest.approx(report["wall_seconds"], rel=0.05, abs=0.5)
    assert "## Where the time went" in markdown
    store = workdir / "outputs" / "stages"  # the store every reproduction shares
    assert {s["dir"] for s in report["stages"]} == {p.name for p in store.iterdir() if not p.name.startswith(".")}
    assert all((store / s["dir"] / "stage.json").is_file() for s in report["stages"])

    again = advx("reproduce", "goodfellow2015", *SMALL, f"hydra.run.dir={out}")
    assert again.exit_code == 0, again.output
    assert ran(report_of(out)) == set()
    assert report_of(out)["claims"] == report["claims"]

    changed = advx("reproduce", "goodfellow2015", *SMALL, "paper.scales.smoke.rbf_epochs=3", f"hydra.run.dir={out}")
    assert changed.exit_code == 0, changed.output
    assert ran(report_of(out)) == {"rbf", "fgsm_rbf"}  # one knob reruns only what it touches

    maxout = next(store / s["dir"] for s in report["stages"] if s["name"] == "maxout")
    shutil.rmtree(maxout)  # retrain one upstream stage: everything that read its model reruns, nothing else
    retrained = advx("reproduce", "goodfellow2015", *SMALL, "paper.scales.smoke.rbf_epochs=3", f"hydra.run.dir={out}")
    assert retrained.exit_code == 0, retrained.output
    assert ran(report_of(out)) == {"maxout", "fgsm_maxout", "transfer_maxout_to_adv", "transfer_adv_to_maxout"}


def test_a_code_change_reruns_every_stage_unless_reuse_any(advx, workdir, monkeypatch):
    out = workdir / "gilmer"
    assert advx("reproduce", "gilmer2018", *SMOKE, f"hydra.run.dir={out}").exit_code == 0
    before = report_of(out)
    changed = {**provenance.code_version(), "source": "0" * 16, "git_sha": "f" * 40, "dirty": False}
    monkeypatch.setattr(stages, "code_version", lambda: changed)
    assert advx("reproduce", "gilmer2018", *SMOKE, "reuse=any", f"hydra.run.dir={out}").exit_code == 0
    reused = report_of(out)
    assert ran(reused) == set() and not any(s["same_code"] for s in reused["stages"])
    assert "made by other code" in (out / "report.md").read_text()
    assert provenance.describe_code(provenance.code_version()) in {s["code"] for s in reused["stages"]}
    assert advx("reproduce", "gilmer2018", *SMOKE, f"hydra.run.dir={out}").exit_code == 0
    assert ran(report_of(out)) == {s["name"] for s in before["stages"]}  # new code: nothing is reused


def test_a_reproduction_killed_mid_stage_resumes_to_the_same_report(advx, workdir, monkeypatch):
    reference = workdir / "whole"
    assert advx("reproduce", "goodfellow2015", *SMALL, f"hydra.run.dir={reference}",
                f"store={workdir / 'store_a'}").exit_code == 0
    calls = []
    real_attack = stages.run_attack

    def killed_in_the_third_attack(typed, out, resolved, show=True):
        calls.append(out)
        if len(calls) == 3:
            (out / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
            raise KeyboardInterrupt  # as if ctrl-C or a kill hit the stage halfway
        return real_attack(typed, out, resolved, show=show)

    monkeypatch.setattr(stages, "run_attack", killed_in_the_third_attack)
    out = workdir / "killed"
    killed = advx("reproduce", "goodfellow2015", *SMALL, f"hydra.run.dir={out}", f"store={workdir / 'store_b'}")
    assert killed.exit_code == 130 and "interrupted" in killed.stderr
    assert not (calls[2] / "stage.json").exists() and not (out / "report.json").exists()
    monkeypatch.setattr(stages, "run_attack", real_attack)
    resumed = advx("reproduce", "goodfellow2015", *SMALL, f"hydra.run.dir={out}", f"store={workdir / 'store_b'}")
    assert resumed.exit_code == 0, resumed.output
    report = report_of(out)
    assert calls[2].name in {s["dir"] for s in report["stages"] if s["ran"]}
    assert {s["name"] for s in report["stages"] if not s["ran"]} >= {"softmax", "maxout"}  # trained before the kill
    assert [c["measured"] for c in report["claims"]] == [c["measured"] for c in report_of(reference)["claims"]]


def test_seed_sweep_judges_the_mean_on_its_interval(advx, workdir):
    sweep = workdir / "seeds"
    result = advx("reproduce", "gilmer2018", "-m", *SMOKE, "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert result.exit_code == 0, result.output
    report = report_of(sweep)
    assert report["seeds"] == [0, 1]
    gap = next(c for c in report["checks"] if c["id"] == "calibration_max_gap")
    assert len(gap["runs"]) == 2 and gap["low"] <= gap["measured"] <= gap["high"]
    assert gap["measured"] == pytest.approx(sum(gap["runs"]) / 2)
    assert gap["passes"] == sum(c["status"] == "reproduced" for r in sweep.glob("*/report.json")
                                for c in json.loads(r.read_text())["checks"] if c["id"] == "calibration_max_gap")
    assert "seeds pass" in (sweep / "report.md").read_text()
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0-seed0", "1-seed1"]


def test_unknown_paper_is_one_clear_error(advx):
    result = advx("reproduce", "nobody2099")
    assert result.exit_code == 2
    assert "unknown paper option 'nobody2099'" in result.stderr and "goodfellow2015" in result.stderr


def claim(criterion: str, measured: float | None, paper: float | None = 0.5, low=None, high=None, id="c") -> Claim:
    return Claim(id, "", "", paper, criterion, "", measured=measured, low=low, high=high)


@pytest.mark.parametrize(("criterion", "holds", "fails"), [
    (">= 0.5", 0.5, 0.49), ("> 0.5", 0.51, 0.5), ("<= 0.5", 0.5, 0.51), ("< 0.5", 0.49, 0.5),
    ("within 0.1", 0.6, 0.61), ("within 0.1", 0.4, 0.39)])
def test_every_operator_is_judged_as_written(criterion, holds, fails):
    assert judge(claim(criterion, holds), {}) == ("reproduced", "")
    assert judge(claim(criterion, fails), {}) == ("deviates", "")


def test_an_interval_must_clear_the_criterion_everywhere():
    assert judge(claim(">= 0.5", 0.6, low=0.55, high=0.7), {})[0] == "reproduced"
    assert judge(claim(">= 0.5", 0.6, low=0.45, high=0.7), {})[0] == "inconclusive"
    assert judge(claim(">= 0.5", 0.4, low=0.3, high=0.45), {})[0] == "deviates"
    assert judge(claim("within 0.1", 0.5, low=0.35, high=0.55), {})[0] == "inconclusive"
    assert judge(claim("within 0.1", 0.8, low=0.7, high=0.9), {})[0] == "deviates"
    other = claim("<= 1", 0.3, low=0.2, high=0.4, id="other")
    assert judge(claim("> claim:other", 0.5, low=0.45, high=0.6), {"other": other})[0] == "reproduced"
    assert judge(claim("> claim:other", 0.5, low=0.35, high=0.6), {"other": other})[0] == "inconclusive"


def test_a_missing_reference_or_measurement_is_not_run_and_a_typo_is_an_error():
    assert judge(claim(">= 0.95", None), {}) == ("not_run", "")
    status, note = judge(claim("> claim:other", 0.4), {"other": claim("<= 1", None, id="other")})
    assert status == "not_run" and "other" in note
    with pytest.raises(ConfigError, match="unknown claim 'othr'"):
        judge(claim("> claim:othr", 0.4), {})
    with pytest.raises(ConfigError, match="needs a number"):
        judge(claim(">= lots", 0.4), {})
    claims = [claim(">= 0.5", None, id="a"), claim(">= 0.5", None, id="b")]
    with pytest.raises(ConfigError, match=r"measured but not in paper.yaml: \['typo'\].*not measured: \['b'\]"):
        settle(claims, {"a": Measurement(0.6), "typo": Measurement(0.6)})


def test_a_pipeline_status_wins_and_smoke_leaves_claims_unjudged_but_judges_checks():
    claims = [claim(">= 0.5", None, id="a"), claim(">= 0.5", None, id="b"), claim(">= 0.5", None, id="c")]
    claims[2].kind = "check"
    settled = settle(claims, {"a": inconclusive("no mistakes to condition on", 0.9), "b": not_run("needs a GPU"),
                              "c": Measurement(0.6)})
    assert [c.status for c in settled] == ["inconclusive", "not_run", "reproduced"]
    assert settled[1].note == "needs a GPU"
    smoke = settle([claim(">= 0.5", None, id="a"), claims[2]], {"a": Measurement(0.9), "c": Measurement(0.1)},
                   verdicts=False, unjudged_note="smoke")
    assert [c.status for c in smoke] == ["inconclusive", "deviates"]


def test_rates_and_means_carry_their_95_percent_intervals():
    zero = rate(0, 10_000)
    assert zero.low == 0 and zero.high == pytest.approx(3.689e-4, rel=1e-3)  # the exact Clopper-Pearson bound
    half = rate(50, 100)
    assert half.low == pytest.approx(0.3983, abs=1e-4) and half.high == pytest.approx(0.6017, abs=1e-4)
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(2.4841, abs=1e-3)  # t(0.975, 2) * 1 / sqrt(3)
    assert t_interval([0.7]) == (0.7, 0.7, 0.7)


def test_every_paper_yaml_parses_with_its_criteria_and_revisions():
    for paper in ("goodfellow2015", "gilmer2018", "ilyas2019"):
        _, claims = load_claims(paper)
        assert {c.kind for c in claims} == {"claim", "check"}
    _, claims = load_claims("ilyas2019")
    small = next(c for c in claims if c.id == "d_robust_acc_small")
    assert small.criterion == "<= 0.1" and small.revisions[0]["criterion"] == "< claim:dadv_robust_acc_large"


def test_ilyas2019_smoke_pipeline_builds_the_four_datasets_and_reports_every_claim(advx, workdir):
    out = workdir / "ilyas"
    result = advx("reproduce", "ilyas2019", *SMOKE, "paper.scales.smoke.robust_source_lr=0.05", f"hydra.run.dir={out}")
    assert result.exit_code == 0, result.output
    report = report_of(out)
    store = workdir / "outputs" / "stages"
    lr = {s["name"]: OmegaConf.load(store / s["dir"] / "config.yaml").optim.lr for s in report["stages"]
          if s["name"].startswith("source_")}
    assert lr == {"source_standard": 0.1, "source_robust": 0.05}  # the robust source's lr is its own knob
    by_id = {c["id"]: c for c in report["claims"] + report["checks"]}
    assert {"dr_robust_gain", "dnr_clean_acc", "drand_minus_ddet", "ddet_next_label_acc", "reload_success_gap",
            "gaussian_condition_ratio"} <= set(by_id)
    assert all(c["measured"] is not None for c in by_id.values())  # every claim is measured at smoke
    assert by_id["reload_success_gap"]["status"] == "reproduced"  # what was built is what is stored
    assert by_id["reload_success_gap"]["measured"] <= 1e-3
    # exact numerics of the Gaussian model: robust learning shrinks the condition number and aligns the gradient
    assert by_id["gaussian_condition_ratio"]["measured"] < 0.5
    assert by_id["gaussian_alignment_robust"]["measured"] > by_id["gaussian_alignment_standard"]["measured"]
    markdown = (out / "report.md").read_text()
    for figure in ("samples.png", "gaussian.png"):
        assert (out / figure).stat().st_size > 1000 and f"]({figure})" in markdown
    assert "| D_R (standard training) |" in markdown and "| D_det built from the robust model |" in markdown
    assert "| D_det's labels, class-wise fixed noise (leakage control) |" in markdown
    assert "| 2 (D_det) |" in markdown and "| 3 |" in markdown  # the relabelling-radius sweep's rows
    assert "| 10 |" in markdown and "| 20 (D_R's step count) |" in markdown  # D_R's inversion at more steps
    assert by_id["dr_robust_gain_small"]["measured"] is not None  # claim (a) at both radii
    control = by_id["ddet_minus_noise_control"]  # D_det against the same labels moved by structureless noise
    assert control["measured"] == pytest.approx(by_id["ddet_clean_acc"]["measured"] - float(
        control["note"].split("control ")[1].split(" ")[0]), abs=1e-3)
    names = {s["name"] for s in report["stages"]}
    assert {"source_standard", "source_robust", "construct_robust", "construct_nonrobust", "construct_drand",
            "construct_ddet", "construct_ddet_from_robust", "construct_dnoise", "train_dnoise", "train_ddet",
            "construct_ddet_eps3", "train_ddet_eps3", "construct_robust_10steps", "construct_robust_20steps",
            "reload_ddet", "pgd10_D_R"} <= names

    again = advx("reproduce", "ilyas2019", *SMOKE, "paper.scales.smoke.robust_source_lr=0.05", f"hydra.run.dir={out}")
    assert again.exit_code == 0, again.output
    assert ran(report_of(out)) == set()


@pytest.mark.slow  # every paper's smoke pipeline again (each has its own test): over a minute
def test_reproduce_all_runs_every_paper_into_one_index(advx, workdir):
    result = advx("reproduce", "all", *SMOKE)
    assert result.exit_code == 0, result.output
    index_dir = workdir / "outputs" / "reproduce" / "all-smoke"
    index = (index_dir / "index.md").read_text()
    assert "4 of 4 papers finished" in index and "Total" in index
    for paper in ("goodfellow2015", "gilmer2018", "ilyas2019", "li2023"):
        assert report_of(index_dir / f"{paper}-seed0")["paper"] == paper
        assert f"]({paper}-seed0/report.md)" in index
    refused = advx("reproduce", "all", *SMOKE, "paper.scales.smoke.rbf_epochs=3")
    assert refused.exit_code == 2 and "shares" in refused.output
