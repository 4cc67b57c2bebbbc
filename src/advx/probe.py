"""Linear probes: `advx probe run=<encoder run> [dataset=...]` (Li et al. 2023's evaluation of a paradigm).

A probe freezes an encoder's representation `features(x)` (any advx model: a supervised classifier, or an encoder
trained by a self-supervised regime), caches it for the probe's training set (no augmentation, eval mode), fits a
linear classifier on it by softmax regression, and reports clean accuracy on the test set. The result is an
ordinary run dir holding a `Classifier` (the encoder's features, the fitted linear head): `advx attack run=<probe
run>` attacks the encoder plus probe end to end, as Li et al. do.

The features are standardised per dimension for the fit (a well-conditioned problem for any encoder's scale);
the standardisation is then folded into the head's weights, so the saved model maps pixels to logits directly.
`probe.untrained=true` probes the encoder's architecture at its seeded random initialisation instead of its
trained weights: the control that shows how much a paradigm adds over random features.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from advx.data import Split, load_dataset
from advx.errors import CheckpointError, ConfigError
from advx.evaluate import error_rate
from advx.jobs import start_run
from advx.models import build_model
from advx.runs import load_model, save_model, trained_dataset, write_json
from advx.runtime import Runtime, eval_mode, seed_everything
from advx.schema import DatasetConfig, ProbeConfig, ProbeTaskConfig

log = logging.getLogger("advx")
ENCODER_PREFIX = "features."  # the state_dict keys a probe takes from its encoder


def frozen_encoder(run: Path, num_classes: int, untrained: bool, device: torch.device) -> tuple[nn.Module, dict]:
    """The encoder of run dir `run` as a Classifier with a fresh head for `num_classes`, and its sidecar spec.

    Pretext-only parts (a SimCLR projection, an MAE decoder) are left out; with `untrained` the weights are the
    architecture's random initialisation under the current torch seed.
    """
    trained, spec = load_model(run, torch.device("cpu"))  # checks the run dir and its checkpoint with clear errors
    hparams = {k: v for k, v in spec["hparams"].items() if k != "pretext"}
    model = build_model(spec["model"], spec["input_shape"], num_classes, spec["mean"], spec["std"], **hparams)
    if not untrained:
        encoder = {k: v for k, v in trained.state_dict().items() if k.startswith(ENCODER_PREFIX)}
        missing, _ = model.load_state_dict(encoder, strict=False)
        stray = [k for k in missing if not k.startswith("head.")]
        if stray:
            raise CheckpointError(f"the encoder in {run} lacks {stray[0]} (and {len(stray) - 1} more keys)")
    spec = {**spec, "num_classes": num_classes, "hparams": hparams}
    return model.to(device).eval(), spec


@torch.no_grad()
def extract_features(features: nn.Module, split: Split, runtime: Runtime, batch_size: int) -> torch.Tensor:
    """The representation of every example of `split`: [N, D] float32, in eval mode, in the split's order."""
    parts = []
    with eval_mode(features):
        for x, _ in split.batches(batch_size):
            with runtime.autocast():
                parts.append(features(x).flatten(1).float())
    return torch.cat(parts)


def fit_linear_probe(train_features: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: ProbeConfig,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Softmax regression on standardised features; returns (weight [C, D], bias [C]) for the raw features and
    the mean training loss per epoch.

    train_features: [N, D] float32; labels: [N] in [0, C). Adam on minibatches drawn with `generator`.
    """
    mean = train_features.mean(0)
    std = train_features.std(0).clamp_min(1e-6)  # a dead feature (constant) stays harmless
    inputs = (train_features - mean) / std
    head = nn.Linear(inputs.shape[1], num_classes).to(inputs.device)
    optimizer = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses = []
    for _ in range(cfg.epochs):
        order = torch.randperm(len(inputs), generator=generator).to(inputs.device)
        total = torch.zeros((), device=inputs.device)
        for start in range(0, len(order), cfg.batch_size):
            index = order[start:start + cfg.batch_size]
            loss = F.cross_entropy(head(inputs[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(index)
        losses.append(total.item() / len(inputs))
    with torch.no_grad():  # fold the standardisation in: W ((f - m) / s) + b = (W / s) f + (b - W (m / s))
        weight = head.weight / std
        bias = head.bias - head.weight @ (mean / std)
    return weight, bias, losses


def run_probe(typed: ProbeTaskConfig, out: Path, resolved_yaml: str) -> dict:
    """Fit a linear probe on the frozen encoder `typed.run` into run dir `out`; returns and writes the metrics."""
    started = time.perf_counter()
    run = Path(typed.run)
    dataset_cfg = typed.dataset or trained_dataset(run, typed.data_dir)
    if typed.dataset is not None and typed.data_dir:
        dataset_cfg.data_dir = typed.data_dir
    runtime = start_run(typed, out, _with_dataset(resolved_yaml, dataset_cfg))
    generator = seed_everything(typed.seed)
    data = load_dataset(dataset_cfg, runtime.device)
    model, spec = frozen_encoder(run, data.num_classes, typed.probe.untrained, runtime.device)
    if list(data.input_shape) != list(spec["input_shape"]):
        raise ConfigError(f"the encoder in {run} takes inputs {tuple(spec['input_shape'])}, but dataset="
                          f"{dataset_cfg.name} has {tuple(data.input_shape)}")
    log.info("probing %s%s (%s) on %s: %d train / %d test examples", "an untrained " if typed.probe.untrained else "",
             run, spec["model"], dataset_cfg.name, len(data.train), len(data.test))
    batch = typed.probe.eval_batch_size
    train_features = extract_features(model.features, data.train, runtime, batch)
    weight, bias, losses = fit_linear_probe(train_features, data.train.labels, data.num_classes, typed.probe,
                                            generator)
    with torch.no_grad():
        model.head.weight.copy_(weight)
        model.head.bias.copy_(bias)
    spec.update(dataset=dataset_cfg.name, encoder=str(run.resolve()), untrained=typed.probe.untrained)
    save_model(out, model, spec)
    metrics = {"test_error": error_rate(model, data.test, runtime, batch),
               "train_error": error_rate(model, data.train, runtime, batch),
               "feature_dim": int(train_features.shape[1]), "final_probe_loss": losses[-1],
               "encoder": str(run.resolve()), "untrained": typed.probe.untrained,
               "wall_seconds": round(time.perf_counter() - started, 2)}
    write_json(out / "metrics.json", metrics)
    log.info("probe test_error=%.4f (train %.4f, %d features); wrote %s", metrics["test_error"],
             metrics["train_error"], metrics["feature_dim"], out)
    return metrics


def _with_dataset(resolved_yaml: str, dataset: DatasetConfig) -> str:
    """The probe's resolved config with the dataset it used (the encoder's when none was named), so that
    `trained_dataset(<probe run>)` finds it as for any training run."""
    config = yaml.safe_load(resolved_yaml)
    config["dataset"] = asdict(dataset)
    return yaml.safe_dump(config, sort_keys=False)
