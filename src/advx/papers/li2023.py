"""li2023: "Adversarial Examples Are Not Real Features" (Li, Wang, Guo, Wang; NeurIPS 2023).

The non-robust features of Ilyas et al. (2019) are useful to supervised learning but not to other paradigms. For
each dataset X in D (natural), D_R and D_NR (ilyas2019's constructions, the same stages of the shared store) and
each paradigm P (SL: supervised; SimCLR: contrastive; MAE: masked image modelling; DDPM: diffusion), an encoder is
trained on X, a linear probe is fitted on its frozen features with X's labels, and the probe is scored on the
clean test set. The relative usefulness of X under P is acc(P, X) / acc(P, D). Beside it:
- the control: the same probe on each paradigm's architecture at its random initialisation, per dataset;
- robustness: AutoAttack (L2) against the SL model trained on D_R and against the robust source it inherits
  from, beside PGD under ilyas2019's rule, at ilyas2019's radii;
- cross-paradigm transfer: L2 perturbations that raise the SL cross-entropy and perturbations that raise the
  SimCLR InfoNCE loss (of an image against its clean self), each scored on both losses, with random noise of the
  same norm as the floor (the authors' transfer figure).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

import advx.papers.ilyas2019 as ilyas2019  # the module itself: importing advx.papers here would be a cycle
from advx.attacks import pgd
from advx.claims import Measurement, Outcome
from advx.data import load_dataset
from advx.models import per_example_loss
from advx.plots import figure, save
from advx.pretext import info_nce, simclr_embed
from advx.runs import load_model, trained_config, trained_dataset, write_json
from advx.runtime import eval_mode, held_out_generator
from advx.schema import Checked, _check, count, positive
from advx.stages import Stages
from advx.timing import section

log = logging.getLogger("advx")
PARADIGMS = {"sl": "SL (supervised)", "simclr": "SimCLR (contrastive)", "mae": "MAE (masked image modelling)",
             "ddpm": "DDPM (diffusion)"}
DATASETS = ("D", "D_R", "D_NR")
SELF_SUPERVISED = ("simclr", "mae", "ddpm")
TRANSFER_NOISE_STREAM = 23  # the held-out stream of the transfer experiment's random-noise floor


@dataclass
class Scale(Checked):
    """Sizes and recipes of one scale of the li2023 pipeline."""

    KEY: ClassVar[str] = "paper.scales.*"

    ilyas_scale: str = "paper"  # the ilyas2019 scale whose sources, D_R and D_NR this scale uses (shared stages)
    # paradigm -> the overrides of its `advx train` (model, regime, optimiser, epochs); the same on every dataset
    encoders: dict[str, list[str]] = field(default_factory=dict)
    probe: list[str] = field(default_factory=list)  # overrides of every `advx probe`
    autoattack: list[str] = field(default_factory=list)  # overrides of the AutoAttack stages
    transfer_examples: int = count(500)  # test images of the cross-paradigm transfer experiment (one batch)
    transfer_steps: int = count(20)  # L2 PGD steps of 2.5 eps / steps on each paradigm's loss

    def validate(self) -> None:
        _check(sorted(self.encoders) == sorted(PARADIGMS),
               f"paper.scales.*.encoders needs one entry per paradigm ({', '.join(PARADIGMS)}), got "
               f"{', '.join(self.encoders) or 'none'}")


@dataclass
class Config(Checked):
    KEY: ClassVar[str] = "paper"

    name: str = "li2023"
    transfer_eps: float | None = positive(None)  # L2 radius of the transfer perturbations (None: ilyas's small one)
    scales: dict[str, Scale] = field(default_factory=dict)


def deviations(scale_name: str, scale: Scale) -> list[tuple[str, str, str]]:
    """Every choice the paper does not state, or that this scale changes, with the reason."""
    rows = [
        ("encoder recipes", "; ".join(f"{p}: {' '.join(o for o in scale.encoders[p] if not o.startswith('model.'))}"
                                      for p in PARADIGMS),
         "the authors' recipes at scale=paper (ResNet-18 SL 30 epochs; SimCLR, MAE 1000 epochs); "
         "shorter and smaller at this scale to fit its budget" if scale_name != "paper" else "the authors' recipes"),
        ("linear probe", "softmax regression on standardised frozen features (Adam), no augmentation: "
         + (" ".join(scale.probe) or "the defaults of `advx probe`"),
         "the authors fit their probes with SGD on the encoder's features; a convex fit, the optimiser barely "
         "matters"),
        ("SL paradigm", "the supervised encoder's own head is replaced by a probe fitted on its frozen features, as "
         "for every paradigm", "one evaluation rule for all paradigms; the SL model's own head is kept for the "
         "robustness rows"),
        ("AutoAttack", "advx's own implementation (attack=autoattack: see its docstring for the components), L2",
         "the reference AutoAttack is not on PyPI; the authors' copy raises eps to at least 0.6 in L2, which we do "
         "not copy"),
        ("transfer experiment", "L2 PGD ascending each loss (the authors' PGD descends it, a known bug we do not "
         "copy); InfoNCE of an image against its clean self, the other test images as negatives, no augmentation",
         "a deterministic loss to attack and to score"),
    ]
    if scale_name == "cpu":
        rows.append(("data", "ilyas2019's cpu-scale data (Fashion-MNIST since 2026-12-07, MNIST before) and its "
                     "D_R / D_NR (the first 6000 training images); small encoders (a CNN, a ViT of patch 4, a UNet)",
                     "CIFAR-10 is not on these machines; one dataset for both papers, so they share stages"))
    if scale_name == "smoke":
        rows.append(("data", "synthetic MNIST-shaped data, tiny encoders", "scale=smoke checks the pipeline"))
    return rows


def run(paper: Config, scale: Scale, stages: Stages, data_dir: str, seed: int, out: Path,
        device: torch.device) -> Outcome:
    composed, _, _ = stages.compose("reproduce", ["paper=ilyas2019", f"scale={scale.ilyas_scale}"])
    ilyas = composed.paper.scales[scale.ilyas_scale]
    sources = ilyas2019.source_models(stages, ilyas, data_dir, seed)
    derived = ilyas2019.derived_datasets(stages, ilyas, sources, seed, ["D_R", "D_NR"])
    data = {"D": _natural(ilyas, data_dir),
            **{name: ["dataset=derived", f"dataset.path={derived[name]}", f"dataset.data_dir={data_dir}"]
               for name in ("D_R", "D_NR")}}
    encoders = {(p, d): stages.train(f"{p}_{d}", [*data[d], *scale.encoders[p], f"seed={seed}"])
                for d in DATASETS for p in PARADIGMS}
    accuracy, control = {}, {}
    for (p, d), encoder in encoders.items():
        probe = [f"run={encoder}", *data[d], *scale.probe, f"seed={seed}"]
        accuracy[p, d] = 1 - stages.probe(f"probe_{p}_{d}", probe)[1]["test_error"]
        control[p, d] = 1 - stages.probe(f"control_{p}_{d}", [*probe, "probe.untrained=true"])[1]["test_error"]
    usefulness = {(p, d): accuracy[p, d] / max(accuracy[p, "D"], 1e-12) for p in PARADIGMS for d in DATASETS}
    robust = {name: _robustness(stages, name, run_dir, ilyas, scale, seed, device)
              for name, run_dir in (("source_robust", sources["robust"]), ("sl_D_R", encoders["sl", "D_R"]))}
    eps = paper.transfer_eps or ilyas.eval_eps[0]
    with section("analysis: cross-paradigm transfer"):
        transfer = _transfer(encoders["sl", "D"], encoders["simclr", "D"], eps, scale, device)
    results = {"accuracy": _keyed(accuracy), "control": _keyed(control), "usefulness": _keyed(usefulness),
               "robustness": robust, "transfer": transfer}
    write_json(out / "li2023.json", results)
    with section("figures"):
        figures = [_plot_usefulness(accuracy, control, usefulness, out), _plot_transfer(transfer, eps, out)]
    tables = [("Linear-probe accuracy on the clean test set (relative usefulness in brackets)",
               _probe_table(accuracy, control, usefulness)),
              ("Robustness: AutoAttack beside PGD (L2)", _robust_table(robust, ilyas)),
              (f"Cross-paradigm transfer (L2 eps {eps:g}, {transfer['examples']} test images)",
               _transfer_table(transfer))]
    return Outcome(_claims(accuracy, control, usefulness, robust, transfer, ilyas), figures, tables)


def _natural(ilyas: ilyas2019.Scale, data_dir: str) -> list[str]:
    """D: the natural training images the derived datasets were built from (their first N), same test set."""
    size = ilyas.construct_examples or ilyas.train_size
    return [f"dataset={ilyas.dataset}", f"dataset.data_dir={data_dir}",
            *([f"dataset.train_size={size}"] if size else []),
            *([f"dataset.test_size={ilyas.test_size}"] if ilyas.test_size else [])]


def _keyed(values: dict[tuple[str, str], float]) -> dict[str, dict[str, float]]:
    return {p: {d: values[p, d] for d in DATASETS} for p in PARADIGMS}


def _robustness(stages: Stages, name: str, run_dir: Path, ilyas: ilyas2019.Scale, scale: Scale, seed: int,
                device: torch.device) -> dict[str, float]:
    """Clean accuracy, PGD robust accuracy by ilyas2019's rule and AutoAttack robust accuracy per eps, on the
    same first test images."""
    row = ilyas2019.evaluate_model(stages, name, run_dir, ilyas, seed, device)
    eps_list = ",".join(f"{e:g}" for e in ilyas.eval_eps)
    subset = [f"num_examples={ilyas.eval_examples}"] if ilyas.eval_examples else []
    attacked = stages.attack(f"autoattack_{name}", [f"run={run_dir}", "attack=autoattack", "attack.norm=l2",
                                                    f"attack.eps=[{eps_list}]", *subset, *scale.autoattack,
                                                    f"seed={seed}"])
    for result in attacked["attacks"]:
        row[f"autoattack@{result['eps']:g}"] = 1 - result["adv_error"]
    return row


def _transfer(sl_run: Path, simclr_run: Path, eps: float, scale: Scale, device: torch.device) -> dict:
    """Mean SL cross-entropy and SimCLR InfoNCE on clean test images and under four perturbations of L2 norm eps:
    PGD on the CE, PGD on the InfoNCE, random noise; and the transfer ratios (loss rise under the other
    paradigm's perturbation over the rise under its own)."""
    classifier, _ = load_model(sl_run, device)
    encoder, _ = load_model(simclr_run, device)
    temperature = float(trained_config(simclr_run)["regime"]["temperature"])
    dataset = trained_dataset(sl_run, None)
    dataset.val_size = 0
    test = load_dataset(dataset, device).test.head(scale.transfer_examples)
    x, y = test.batch(torch.arange(len(test), device=device))
    with eval_mode(encoder), torch.no_grad():
        clean_embedding = simclr_embed(encoder, x)

    def cross_entropy(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return per_example_loss(classifier(inputs), labels, classifier.output)

    def contrastive(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return info_nce(simclr_embed(encoder, inputs), clean_embedding, temperature)

    with eval_mode(classifier), eval_mode(encoder):
        generator = held_out_generator(TRANSFER_NOISE_STREAM)
        noise = torch.randn(x.shape, generator=generator).to(device)
        noise = (x + eps * noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
        common = {"eps": eps, "norm": "l2", "steps": scale.transfer_steps, "clip": True}
        inputs = {"clean": x, "noise": noise,
                  "ce_attack": pgd(classifier, x, y, objective=cross_entropy, **common),
                  "infonce_attack": pgd(encoder, x, y, objective=contrastive, **common)}
        with torch.no_grad():
            losses = {name: {"ce": cross_entropy(v, y).mean().item(), "infonce": contrastive(v, y).mean().item()}
                      for name, v in inputs.items()}

    def ratio(loss: str, own: str, other: str) -> float:
        rise = losses[own][loss] - losses["clean"][loss]
        return (losses[other][loss] - losses["clean"][loss]) / rise if rise > 0 else float("nan")

    return {"losses": losses, "examples": len(y), "temperature": temperature,
            "infonce_to_ce": ratio("ce", "ce_attack", "infonce_attack"),
            "ce_to_infonce": ratio("infonce", "infonce_attack", "ce_attack")}


def _claims(accuracy, control, usefulness, robust, transfer, ilyas) -> dict[str, Measurement]:
    def rel(p: str, d: str) -> str:
        return f"{accuracy[p, d]:.3f} / {accuracy[p, 'D']:.3f}"

    measured = {"sl_dnr_usefulness": Measurement(usefulness["sl", "D_NR"], f"SL probe acc on D_NR / on D: "
                                                 f"{rel('sl', 'D_NR')}")}
    for p in SELF_SUPERVISED:
        measured[f"{p}_dnr_gap"] = Measurement(usefulness["sl", "D_NR"] - usefulness[p, "D_NR"],
                                               f"relative usefulness of D_NR: SL {usefulness['sl', 'D_NR']:.3f}, "
                                               f"{p} {usefulness[p, 'D_NR']:.3f} ({rel(p, 'D_NR')})")
        measured[f"{p}_dr_over_dnr"] = Measurement(usefulness[p, "D_R"] - usefulness[p, "D_NR"],
                                                   f"{p}: D_R {usefulness[p, 'D_R']:.3f} ({rel(p, 'D_R')}), D_NR "
                                                   f"{usefulness[p, 'D_NR']:.3f}")
    measured["transfer_infonce_to_ce"] = Measurement(transfer["infonce_to_ce"], "SL cross-entropy rise under "
                                                     "InfoNCE perturbations / under its own")
    measured["transfer_ce_to_infonce"] = Measurement(transfer["ce_to_infonce"], "InfoNCE rise under cross-entropy "
                                                     "perturbations / under its own")
    for p in PARADIGMS:
        measured[f"{p}_beats_control"] = Measurement(accuracy[p, "D"] - control[p, "D"],
                                                     f"probe on D: trained {accuracy[p, 'D']:.3f}, untrained "
                                                     f"{control[p, 'D']:.3f}")
    return {**measured, **_robustness_claims(robust, ilyas)}


def _robustness_claims(robust: dict[str, dict], ilyas: ilyas2019.Scale) -> dict[str, Measurement]:
    """AutoAttack against PGD at ilyas2019's small radius (every radius for the checks)."""
    small = f"{ilyas.eval_eps[0]:g}"
    dr, source = robust["sl_D_R"], robust["source_robust"]
    measured = {
        "dr_autoattack_vs_source": Measurement(
            dr[f"autoattack@{small}"] / max(source[f"autoattack@{small}"], 1e-12),
            f"L2 eps {small}: SL on D_R {dr[f'autoattack@{small}']:.3f}, robust source "
            f"{source[f'autoattack@{small}']:.3f}"),
        "pgd_overstates": Measurement(dr[f"robust@{small}"] - dr[f"autoattack@{small}"],
                                      f"SL on D_R, L2 eps {small}: PGD {dr[f'robust@{small}']:.3f}, "
                                      f"AutoAttack {dr[f'autoattack@{small}']:.3f}"),
    }
    for name, row in robust.items():
        measured[f"autoattack_not_weaker_{name}"] = Measurement(
            min(row[f"robust@{e:g}"] - row[f"autoattack@{e:g}"] for e in ilyas.eval_eps),
            "smallest PGD minus AutoAttack robust accuracy over the radii")
    return measured


def _probe_table(accuracy, control, usefulness) -> str:
    lines = ["| paradigm | D | D_R | D_NR | untrained encoder on D / D_R / D_NR |", "|---|---|---|---|---|"]
    for p, label in PARADIGMS.items():
        cells = [f"{100 * accuracy[p, 'D']:.1f}"] + [f"{100 * accuracy[p, d]:.1f} ({usefulness[p, d]:.2f})"
                                                     for d in ("D_R", "D_NR")]
        lines.append(f"| {label} | " + " | ".join(cells) + " | "
                     + " / ".join(f"{100 * control[p, d]:.1f}" for d in DATASETS) + " |")
    return "\n".join(lines)


def _robust_table(robust: dict[str, dict], ilyas: ilyas2019.Scale) -> str:
    heads = [f"eps {e:g}: PGD / AutoAttack" for e in ilyas.eval_eps]
    lines = ["| model | clean | " + " | ".join(heads) + " |", "|---" * (2 + len(heads)) + "|"]
    labels = {"source_robust": "robust source (adversarially trained on D)", "sl_D_R": "SL trained on D_R"}
    for name, row in robust.items():
        cells = [f"{100 * row[f'robust@{e:g}']:.1f} / {100 * row[f'autoattack@{e:g}']:.1f}" for e in ilyas.eval_eps]
        lines.append(f"| {labels[name]} | {100 * row['clean']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _transfer_table(transfer: dict) -> str:
    lines = ["| inputs | SL cross-entropy | SimCLR InfoNCE |", "|---|---|---|"]
    names = {"clean": "clean", "noise": "random L2 noise", "ce_attack": "PGD on the cross-entropy",
             "infonce_attack": "PGD on the InfoNCE"}
    for key, label in names.items():
        loss = transfer["losses"][key]
        lines.append(f"| {label} | {loss['ce']:.3f} | {loss['infonce']:.3f} |")
    return "\n".join(lines)


def _plot_usefulness(accuracy, control, usefulness, out: Path) -> str:
    """Probe accuracy per paradigm and dataset (with the untrained control), and relative usefulness."""
    fig, axes = figure((12, 4.4), rows=1, cols=2)
    left, right = axes[0]
    width = 0.2
    for i, d in enumerate(DATASETS):
        positions = [k + (i - 1) * width for k in range(len(PARADIGMS))]
        left.bar(positions, [accuracy[p, d] for p in PARADIGMS], width, label=f"trained on {d}")
        left.scatter(positions, [control[p, d] for p in PARADIGMS], marker="_", s=200, color="black",
                     label="untrained encoder" if i == 0 else None, zorder=3)
    left.set_xticks(range(len(PARADIGMS)), list(PARADIGMS))
    left.set_ylabel("linear-probe accuracy, clean test set")
    left.set_ylim(0, 1)
    left.legend(fontsize=8)
    for i, d in enumerate(("D_R", "D_NR")):
        positions = [k + (i - 0.5) * width for k in range(len(PARADIGMS))]
        right.bar(positions, [usefulness[p, d] for p in PARADIGMS], width, label=d)
    right.axhline(1.0, color="gray", linestyle=":")
    right.set_xticks(range(len(PARADIGMS)), list(PARADIGMS))
    right.set_ylabel("relative usefulness acc(D_X) / acc(D)")
    right.legend(fontsize=8)
    right.set_title("non-robust features help SL; do they help the other paradigms?")
    return save(fig, out, "usefulness.png")


def _plot_transfer(transfer: dict, eps: float, out: Path) -> str:
    """Each paradigm's loss on clean inputs and under noise, its own attack and the other paradigm's attack."""
    fig, axes = figure((10, 4), rows=1, cols=2)
    order = ("clean", "noise", "ce_attack", "infonce_attack")
    labels = ("clean", "noise", "PGD on CE", "PGD on InfoNCE")
    for ax, (loss, title) in zip(axes[0], (("ce", "SL cross-entropy"), ("infonce", "SimCLR InfoNCE")), strict=True):
        ax.bar(labels, [transfer["losses"][k][loss] for k in order], color=["gray", "silver", "tab:blue", "tab:red"])
        ax.set_title(f"{title} (L2 eps {eps:g})")
        ax.set_ylabel("mean loss")
    return save(fig, out, "transfer.png")
