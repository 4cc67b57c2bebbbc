"""goodfellow2015: "Explaining and Harnessing Adversarial Examples" (Goodfellow, Shlens, Szegedy; ICLR 2015).

The pipeline trains every model of the paper's MNIST sections as cached stages (softmax, maxout, maxout with
adversarial training, noise-trained controls, RBF, sigmoid-output maxout, an ensemble, logistic regression 3 vs
7, maxout with L1 decay, and the 1600-unit models at scale=paper), measures FGSM error and confidence with
attack stages (including transfer both ways), then runs the analyses that need several models at once
(agreement on maxout's mistakes, the ensemble, rubbish-class noise, logistic regression's closed form, the
logit trace of Figure 4) and writes the report with its figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from advx.attacks import fgsm
from advx.claims import Measurement, Outcome, inconclusive, not_run, rate
from advx.data import load_dataset
from advx.models import probabilities
from advx.plots import figure, save
from advx.runs import load_model, read_history, trained_dataset
from advx.schema import Checked, _check, count, non_negative, positive
from advx.stages import Stages
from advx.timing import section

log = logging.getLogger("advx")


@dataclass
class Scale(Checked):
    """Sizes of one scale of the goodfellow2015 pipeline (epochs per model family, ensemble size, ...)."""

    KEY: ClassVar[str] = "paper.scales.*"

    dataset: str = "mnist"  # mnist | synthetic (smoke)
    train_size: int | None = count(None)
    test_size: int | None = count(None)
    val_size: int = non_negative(0)  # > 0 with patience: the paper's early stopping on a validation split
    patience: int = non_negative(0)  # epochs without validation improvement before a model stops (paper: 100)
    # the epoch at which the recipe's lr decay (to 0.05x) and momentum ramp (0.5 to 0.7) saturate: 250 in pylearn2's
    # maxout recipe; None compresses both to each run's length
    saturate_epochs: int | None = count(None)
    maxout_epochs: int = count(30)  # with patience: the most epochs a maxout net may train
    adv_epochs: int = count(20)
    control_epochs: int = count(10)  # sign / uniform noise, sigmoid-output maxout, ensemble members
    softmax_epochs: int = count(10)
    rbf_epochs: int = count(10)
    logistic_epochs: int = count(10)
    l1_epochs: int = count(5)
    ensemble_members: int = count(3)  # the paper's ensemble has 12
    large_units: int = non_negative(0)  # 1600-unit variant (paper scale); 0 skips it
    large_epochs: int = non_negative(0)
    rubbish_samples: int = count(10000)
    cifar: bool = False  # the conv-maxout CIFAR-10 arm (needs CIFAR-10 on disk)
    cifar_epochs: int = non_negative(0)
    cifar_synthetic: bool = False  # run the CIFAR arm on synthetic CIFAR-shaped data (tests)
    cifar_channels: list[int] = count([96, 192, 192])
    cifar_fc_units: int = count(500)

    def validate(self) -> None:
        _check(not self.patience or self.val_size > 0, "paper.scales.*.patience needs val_size > 0")


@dataclass
class Config(Checked):
    KEY: ClassVar[str] = "paper"

    name: str = "goodfellow2015"
    eps: float = positive(0.25)  # the paper's MNIST FGSM size
    cifar_eps: float = positive(0.1)  # in GCN+ZCA space
    eps_grid: list[float] = non_negative([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3])
    l1: float = non_negative(0.0025)
    scales: dict[str, Scale] = field(default_factory=dict)

MAXOUT = ["model=maxout", "optim=sgd", "optim.lr=0.1", "optim.momentum=0.5", "optim.momentum_final=0.7",
          "optim.schedule=linear", "optim.lr_final_factor=0.05",
          "train.batch_size=100"]  # the maxout MNIST recipe (Goodfellow et al. 2013)
LINEAR_SGD = ["optim=sgd", "optim.lr=0.1", "optim.momentum=0.5", "train.batch_size=100"]  # not published


def deviations(scale_name: str, scale: Scale) -> list[tuple[str, str, str]]:
    """Every choice the paper does not state, or that this scale changes, with the reason."""
    caps = (f"maxout {scale.maxout_epochs}, adversarial training {scale.adv_epochs}, "
            f"controls/ensemble/sigmoid {scale.control_epochs}")
    rows = [
        ("training length", f"early stopping after {scale.patience} epochs without validation improvement, at most "
         f"{caps} epochs" if scale.patience else f"fixed: {caps} epochs",
         "the paper early-stops after 100 epochs without improvement (hundreds of epochs); scale=cpu must fit its "
         "time budget"),
        ("schedule", "lr 0.1 decaying linearly to 0.005, momentum 0.5 rising to 0.7, both " +
         (f"saturating at epoch {scale.saturate_epochs}" if scale.saturate_epochs else "over each run's length"),
         "pylearn2's recipe saturates both at epoch 250" + (
             "; a run that stops earlier never reaches the ramps' end" if scale.saturate_epochs else
             "; a shorter run compresses the ramps")),
        ("validation split", f"the last {scale.val_size} training examples; adversarial training stops on FGSM "
         "validation error, every other model on validation error; logistic regression 3 vs 7 (12k images) trains "
         "on all its images for a fixed length" if scale.val_size else
         "none: train on all 60k, report the last epoch", "the recipe's 50k / 10k split and criteria"),
        ("retraining on all 60k after early stopping", "not done", "one training per model keeps stages simple"),
        ("ensemble size", f"{scale.ensemble_members} maxout nets (seeds differ)", "12 at scale=paper; CPU time"),
        ("ensemble prediction", "mean of the members' softmax probabilities; FGSM on its log", "not stated"),
        ("softmax and logistic training", "SGD lr 0.1, momentum 0.5, batch 100, no decay", "not stated"),
        ("RBF network", "diagonal beta per class (init 0.01), centres init 0.5, one-vs-all likelihood, Adam "
         "lr 0.01", "the paper gives only p(y|x) = exp(-(x-mu)^T beta (x-mu))"),
        ("noise-trained controls", "the adversarial objective with alpha 0.5 and noise in place of FGSM",
         "the paper says only 'trained with noise instead'"),
        ("adversarial examples during training", "crafted in eval mode (dropout off), no gradient through them",
         "not stated; the conventional choice"),
        ("clipping", "none, for training and for FGSM", "the paper never clips to [0, 1]"),
        ("FGSM confidence", "mean probability of the predicted class over all adversarial examples",
         "the paper's wording leaves open whether it averages over mistakes only; both are in the stage metrics"),
        ("rubbish inputs", "x ~ N(0, I) in pixel space, unclipped", "as in the paper"),
        ("CIFAR-10 conv maxout", "96/192/192 maxout conv (2 pieces, kernels 5/5/3, 2x2 pooling), 500x5 maxout FC, "
         "SGD lr 0.05 momentum 0.5->0.7, batch 128; GCN (scale 55) + ZCA (bias 0.1) fit on the training split",
         "the paper gives no architecture; the maxout paper's shape with simpler pooling"),
    ]
    if not scale.large_units:
        rows.append(("1600-unit models", "not run", f"scale={scale_name} skips them (GPU-sized)"))
    if scale.dataset == "synthetic":
        rows.append(("data", "synthetic MNIST-shaped data", "scale=smoke exercises the pipeline in seconds"))
    return rows


def run(paper: Config, scale: Scale, stages: Stages, data_dir: str, seed: int,
        out: Path, device: torch.device) -> Outcome:
    """Run every stage and analysis; returns the measurements by claim id and the figure file names."""
    all_train = [f"dataset={scale.dataset}", f"dataset.data_dir={data_dir}",
                 *(f"dataset.{key}={value}" for key in ("train_size", "test_size")
                   if (value := getattr(scale, key)) is not None)]
    data = [*all_train, f"dataset.val_size={scale.val_size}", f"train.patience={scale.patience}"]
    maxout = [*data, *MAXOUT, *([f"optim.saturate_epochs={scale.saturate_epochs}"] if scale.saturate_epochs else [])]
    eps = paper.eps
    runs = {
        "softmax": stages.train("softmax", [*data, "model=softmax", *LINEAR_SGD, f"train.epochs={scale.softmax_epochs}",
                                            f"seed={seed}"]),
        "maxout": stages.train("maxout", [*maxout, f"train.epochs={scale.maxout_epochs}", f"seed={seed}"]),
        "adv": stages.train("maxout_adv", [*maxout, "regime=fgsm_adv", f"regime.eps={eps}",
                                           f"train.epochs={scale.adv_epochs}", f"seed={seed}",
                                           *(["train.early_stop_on=val_adv_error"] if scale.val_size else [])]),
        "sign": stages.train("maxout_sign_noise", [*maxout, "regime=noise", "regime.noise=sign", f"regime.eps={eps}",
                                                   f"train.epochs={scale.control_epochs}", f"seed={seed}"]),
        "uniform": stages.train("maxout_uniform_noise", [*maxout, "regime=noise", "regime.noise=uniform",
                                                         f"regime.eps={eps}", f"train.epochs={scale.control_epochs}",
                                                         f"seed={seed}"]),
        "rbf": stages.train("rbf", [*data, "model=rbf", "optim=adam", "optim.lr=0.01", "train.batch_size=100",
                                    f"train.epochs={scale.rbf_epochs}", f"seed={seed}"]),
        "sigmoid": stages.train("maxout_sigmoid", [*maxout, "model.output=sigmoid",
                                                   f"train.epochs={scale.control_epochs}", f"seed={seed}"]),
        # 3 vs 7 has 12k training images: a 10k validation split would leave it 2k, so it trains on all of them
        "logistic": stages.train("logistic_3v7", [*all_train, "dataset.classes=[3,7]", "model=logistic", *LINEAR_SGD,
                                                  f"train.epochs={scale.logistic_epochs}", f"seed={seed}"]),
        "l1": stages.train("maxout_l1", [*maxout, f"optim.l1_first_layer={paper.l1}", f"train.epochs={scale.l1_epochs}",
                                         f"seed={seed}"]),
    }
    members = [stages.train(f"ensemble_member{i}", [*maxout, f"train.epochs={scale.control_epochs}",
                                                    f"seed={1000 * (seed + 1) + i}"])
               for i in range(scale.ensemble_members)]
    if scale.large_units:
        large = [*maxout, f"model.units={scale.large_units}", f"train.epochs={scale.large_epochs}", f"seed={seed}"]
        runs["large"] = stages.train("maxout1600", large)
        runs["large_adv"] = stages.train("maxout1600_adv", [*large, "regime=fgsm_adv", f"regime.eps={eps}",
                                                            "train.early_stop_on=val_adv_error"])

    grid = "[" + ",".join(f"{e:g}" for e in sorted({*paper.eps_grid, eps})) + "]"
    attacked = {name: stages.attack(f"fgsm_{name}", [f"run={path}", "attack=fgsm", f"attack.eps={grid}"])
                for name, path in runs.items()}
    fgsm_at = {name: _row(metrics, eps) for name, metrics in attacked.items()}
    curves = {name: metrics["attacks"] for name, metrics in attacked.items() if name != "l1"}
    to_adv = _row(stages.attack("transfer_maxout_to_adv", [f"run={runs['adv']}", f"source={runs['maxout']}",
                                                          "attack=fgsm", f"attack.eps={eps}"]), eps)
    from_adv = _row(stages.attack("transfer_adv_to_maxout", [f"run={runs['maxout']}", f"source={runs['adv']}",
                                                            "attack=fgsm", f"attack.eps={eps}"]), eps)

    m: dict[str, Measurement] = {}

    def put(claim: str, value: float | None, note: str = "") -> None:
        m[claim] = Measurement(value, note)

    put("softmax_fgsm_error", fgsm_at["softmax"]["adv_error"])
    put("softmax_fgsm_confidence", fgsm_at["softmax"]["adv_confidence"])
    trained = {name: _training_length(path, "val_adv_error" if name == "adv" else "val_error", scale.patience)
               for name, path in runs.items()}
    put("maxout_clean_error", fgsm_at["maxout"]["clean_error"], trained["maxout"])
    put("maxout_fgsm_error", fgsm_at["maxout"]["adv_error"])
    put("maxout_fgsm_confidence", fgsm_at["maxout"]["adv_confidence"],
        f"on mistakes only: {fgsm_at['maxout']['adv_confidence_wrong']:.3f}")
    put("adv_clean_error", fgsm_at["adv"]["clean_error"], trained["adv"])
    put("adv_fgsm_error", fgsm_at["adv"]["adv_error"])
    put("adv_fgsm_confidence_wrong", fgsm_at["adv"]["adv_confidence_wrong"])
    put("transfer_to_adv_error", to_adv["adv_error"])
    put("transfer_from_adv_error", from_adv["adv_error"])
    put("sign_noise_fgsm_error", fgsm_at["sign"]["adv_error"])
    put("sign_noise_fgsm_confidence", fgsm_at["sign"]["adv_confidence"], trained["sign"])
    put("uniform_noise_fgsm_error", fgsm_at["uniform"]["adv_error"])
    put("uniform_noise_fgsm_confidence", fgsm_at["uniform"]["adv_confidence"], trained["uniform"])
    put("rbf_fgsm_error", fgsm_at["rbf"]["adv_error"], trained["rbf"])
    put("rbf_fgsm_confidence_wrong", fgsm_at["rbf"]["adv_confidence_wrong"])
    put("rbf_clean_confidence", fgsm_at["rbf"]["clean_confidence"])
    put("logistic_clean_error", fgsm_at["logistic"]["clean_error"])
    put("logistic_fgsm_error", fgsm_at["logistic"]["adv_error"])
    if scale.large_units:
        put("large_clean_error", fgsm_at["large"]["clean_error"])
        put("large_adv_clean_error", fgsm_at["large_adv"]["clean_error"])
    else:
        for claim in ("large_clean_error", "large_adv_clean_error"):
            m[claim] = not_run("1600-unit models run at scale=paper only")
    l1_history = _last_row(runs["l1"] / "metrics.csv")
    naive_history = _row_at(runs["maxout"] / "metrics.csv", int(l1_history["epoch"]))
    put("l1_train_error", float(l1_history["train_error"]),
        f"after {l1_history['epoch']} epochs; without L1 at that epoch: {float(naive_history['train_error']):.3f}")

    with section("analysis: transfer agreement"):
        m.update(_agreement(runs, eps, device))
    with section("analysis: ensemble"):
        m.update(_ensemble(members, eps, device))
    with section("analysis: rubbish-class examples"):
        m.update(_rubbish(runs, scale.rubbish_samples, seed, device))
    with section("analysis: closed form"):
        m.update(_closed_form(runs["logistic"], eps, device))
    m.update(_cifar_arm(paper, scale, stages, data_dir, seed))
    with section("figures"):
        figures = [_plot_error_vs_eps(curves, out), _plot_logit_trace(runs["maxout"], out, device)]
    return Outcome(m, figures)


def _cifar_arm(paper: Config, scale: Scale, stages: Stages, data_dir: str, seed: int,
               ) -> dict[str, Measurement]:
    """Sec. 4: conv maxout on GCN+ZCA CIFAR-10, FGSM eps 0.1 in that space (no box, so no clipping)."""
    claims = ("cifar_conv_maxout_fgsm_error", "cifar_conv_maxout_confidence_wrong")
    folder = Path(data_dir) / "cifar-10-batches-py"
    if scale.cifar_synthetic:
        data = ["dataset=synthetic", "dataset.shape=cifar", "dataset.train_size=256", "dataset.test_size=128"]
        note = "synthetic CIFAR-shaped data (smoke)"
    elif scale.cifar and folder.is_dir():
        data = ["dataset=cifar10", f"dataset.data_dir={data_dir}"]
        note = f"{scale.cifar_epochs} epochs"
    else:
        reason = (f"CIFAR-10 not found in {folder}" if scale.cifar else
                  "the CIFAR-10 arm runs at scale=paper (GPU) with CIFAR-10 on disk")
        return {claim: not_run(reason) for claim in claims}
    channels = "[" + ",".join(map(str, scale.cifar_channels)) + "]"
    run_dir = stages.train("cifar_conv_maxout", [
        *data, "dataset.preprocess=gcn_zca", "model=conv_maxout", f"model.channels={channels}",
        f"model.fc_units={scale.cifar_fc_units}", "optim=sgd", "optim.lr=0.05", "optim.momentum=0.5",
        "optim.momentum_final=0.7", "train.batch_size=128", f"train.epochs={scale.cifar_epochs}", f"seed={seed}"])
    row = _row(stages.attack("fgsm_cifar_conv_maxout", [f"run={run_dir}", "attack=fgsm", "attack.clip=false",
                                                        f"attack.eps={paper.cifar_eps}"]), paper.cifar_eps)
    return {"cifar_conv_maxout_fgsm_error": Measurement(row["adv_error"], note),
            "cifar_conv_maxout_confidence_wrong": Measurement(row["adv_confidence_wrong"], note)}


def _training_length(run_dir: Path, criterion: str, patience: int) -> str:
    """How long a run trained, for a claim's note: its epochs and, with early stopping, the epoch whose weights
    it kept (the first with the lowest `criterion` on the validation split)."""
    rows = read_history(run_dir)
    if not patience or criterion not in rows[0]:
        return f"{len(rows)} epochs"
    best = min(rows, key=lambda row: float(row[criterion]))
    return f"kept epoch {best['epoch']} of {len(rows)} (lowest {criterion})"


def _row(metrics: dict, eps: float) -> dict:
    return next(r for r in metrics["attacks"] if abs(r["eps"] - eps) < 1e-9)


def _read_csv(path: Path) -> list[dict]:
    return read_history(path.parent)  # a damaged metrics.csv is one DamagedFile line, not a traceback


def _last_row(path: Path) -> dict:
    return _read_csv(path)[-1]


def _row_at(path: Path, epoch: int) -> dict:
    rows = _read_csv(path)
    return next((r for r in rows if int(r["epoch"]) == epoch), rows[-1])


def _test_set(run_dir: Path, device: torch.device):
    cfg = trained_dataset(run_dir, None)
    cfg.val_size = 0
    return load_dataset(cfg, device).test


def _predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(chunk).argmax(1) for chunk in x.split(1000)])


def _agreement(runs: dict[str, Path], eps: float, device: torch.device) -> dict[str, Measurement]:
    """Sec. 8: on maxout's FGSM examples, how often softmax and the RBF pick maxout's (wrong) class."""
    maxout, _ = load_model(runs["maxout"], device)
    test = _test_set(runs["maxout"], device)
    x, y = test.batch(torch.arange(len(test), device=device))
    x_adv = torch.cat([fgsm(maxout, xb, yb, eps=eps) for xb, yb in zip(x.split(1000), y.split(1000), strict=True)])
    maxout_pred = _predict(maxout, x_adv)
    maxout_wrong = maxout_pred != y
    found = {}
    for name in ("softmax", "rbf"):
        other, _ = load_model(runs[name], device)
        other_pred = _predict(other, x_adv)
        same = other_pred == maxout_pred
        both = maxout_wrong & (other_pred != y)
        found[f"{name}_agrees_maxout"] = _share(same, maxout_wrong, "maxout mistakes")
        found[f"{name}_agrees_maxout_both_wrong"] = _share(same, both, f"examples both maxout and {name} get wrong")
    return found


def _share(event: torch.Tensor, given: torch.Tensor, what: str) -> Measurement:
    """The fraction of the `given` examples where `event` holds; inconclusive when there are none to condition on."""
    n = int(given.sum())
    if not n:
        return inconclusive(f"no {what} to condition on")
    return Measurement(float((event & given).sum()) / n, f"{n} {what}")


class Ensemble(torch.nn.Module):
    """Mean of the members' softmax probabilities; returns its log, so softmax(output) is that mean [B, C]."""

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([m(x).float().softmax(1) for m in self.members]).mean(0)
        return mean.clamp_min(1e-12).log()


def _ensemble(members: list[Path], eps: float, device: torch.device) -> dict[str, Measurement]:
    """Sec. 7: an ensemble of maxout nets errs on FGSM crafted on itself and on one of its members."""
    models = [load_model(path, device)[0] for path in members]
    ensemble = Ensemble(models).eval()
    test = _test_set(members[0], device)
    errors = {"ensemble": 0, "member": 0}
    for xb, yb in test.batches(1000):
        for name, crafter in (("ensemble", ensemble), ("member", models[0])):
            errors[name] += int((_predict(ensemble, fgsm(crafter, xb, yb, eps=eps)) != yb).sum())
    note = f"{len(members)} members"
    return {"ensemble_attacked_error": Measurement(errors["ensemble"] / len(test), note),
            "ensemble_member_attacked_error": Measurement(errors["member"] / len(test), note)}


def _rubbish(runs: dict[str, Path], samples: int, seed: int, device: torch.device) -> dict[str, Measurement]:
    """Sec. 9: Gaussian noise x ~ N(0, I); an error is any class given probability > 0.5."""
    generator = torch.Generator().manual_seed(seed)
    found = {}
    for name, claim in (("maxout", "rubbish_maxout"), ("sigmoid", "rubbish_sigmoid"), ("softmax", "rubbish_softmax"),
                        ("rbf", "rubbish_rbf")):
        model, spec = load_model(runs[name], device)
        noise = torch.randn(samples, *spec["input_shape"], generator=generator).to(device)
        with torch.no_grad():
            top = torch.cat([probabilities(model(chunk), model.output).max(1).values for chunk in noise.split(1000)])
        wrong = top > 0.5
        found[f"{claim}_error"] = rate(int(wrong.sum()), samples, f"{int(wrong.sum())} of {samples} noise samples "
                                       "(Monte Carlo; judged on the 95% Clopper-Pearson interval)")
        if claim == "rubbish_maxout":
            found["rubbish_maxout_confidence"] = (Measurement(float(top[wrong].mean())) if wrong.any() else
                                                  inconclusive("no noise sample was given a class with p > .5"))
    return found


def _closed_form(run_dir: Path, eps: float, device: torch.device) -> dict[str, Measurement]:
    """Sec. 5: on logistic regression FGSM moves the logit by exactly eps * ||w||_1 against the label."""
    model, _ = load_model(run_dir, device)
    test = _test_set(run_dir, device)
    x, y = test.batch(torch.arange(len(test), device=device))
    x_adv = fgsm(model, x, y, eps=eps)
    with torch.no_grad():
        z = model(x)[:, 1]
        z_adv = model(x_adv)[:, 1]
        shift = eps * model.head.linear.weight.abs().sum()
        expected = torch.where(y == 1, z - shift, z + shift)
    gap = float((z_adv - expected).abs().max())
    return {"logistic_closed_form_gap": Measurement(gap, f"eps*||w||_1 = {float(shift):.2f}")}


def _plot_error_vs_eps(curves: dict[str, list[dict]], out: Path) -> str:
    labels = {"softmax": "softmax", "maxout": "maxout", "adv": "maxout, adv. trained", "sign": "maxout, sign noise",
              "uniform": "maxout, uniform noise", "rbf": "RBF", "sigmoid": "maxout, sigmoid outputs",
              "logistic": "logistic 3 vs 7", "large": "maxout 1600", "large_adv": "maxout 1600, adv. trained"}
    fig, ax = figure((6.4, 4.4))
    for name, rows in curves.items():
        eps, errors = [r["eps"] for r in rows], [r["adv_error"] for r in rows]
        ax.plot(eps, errors, marker="o", ms=3, label=labels.get(name, name))
    ax.set_xlabel("FGSM eps (pixels in [0, 1], unclipped)")
    ax.set_ylabel("test error on FGSM examples")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("FGSM error vs eps (Goodfellow et al. 2015)")
    return save(fig, out, "error_vs_eps.png")


def _plot_logit_trace(run_dir: Path, out: Path, device: torch.device) -> str:
    """Figure 4: the logits of a naive maxout net for one test digit along the FGSM direction, eps in [-10, 10]."""
    model, _ = load_model(run_dir, device)
    test = _test_set(run_dir, device)
    x, y = test.batch(torch.arange(min(len(test), 100), device=device))
    index = int((_predict(model, x) == y).nonzero()[0]) if (_predict(model, x) == y).any() else 0
    x0, y0 = x[index:index + 1], y[index:index + 1]
    direction = fgsm(model, x0, y0, eps=1.0) - x0  # sign of the gradient
    eps = torch.linspace(-10, 10, 401, device=device)
    with torch.no_grad():
        logits = torch.cat([model(x0 + e * direction) for e in eps]).float().cpu()
    fig, ax = figure((6.4, 4.4))
    for c in range(logits.shape[1]):
        true = c == int(y0)
        ax.plot(eps.cpu(), logits[:, c], lw=2.0 if true else 1.0, label=f"{c} (true)" if true else f"{c}")
    ax.set_xlabel("eps along sign(grad_x J)")
    ax.set_ylabel("logit")
    ax.set_title("Maxout logits along the FGSM direction (cf. Figure 4)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save(fig, out, "logit_trace.png")
