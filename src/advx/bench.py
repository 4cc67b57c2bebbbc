"""`advx bench`: advx's training loop and FGSM evaluation timed against bare PyTorch loops, same machine, one run.

The workload is the maxout MNIST recipe of the foundation issue (2 x 240 units x 5 pieces, dropout 0.8/0.5,
SGD lr 0.1, momentum 0.5, max column norm 1.9365, batch 100). The two loops alternate epoch by epoch in
ABBA order after one warm-up epoch each, so drifts in the machine's speed hit both alike; the medians and the
spread are reported. Both epochs do the same work, training and then the test error (a pass over the 10k test
images, about 5% of the epoch): advx's is the full `fit` epoch, which also writes its checkpoint, so the ratio
is advx's overhead. The FGSM pass measures what `advx attack` reports (clean and
adversarial error and confidence) against a plain loop computing the same numbers.

Against the field (`compare_torchattacks`, when torchattacks is installed: `make bench-deps`): FGSM, PGD-Linf
and PGD-L2 (40 steps, with and without random start) and APGD-CE on a standard and an adversarially trained
MNIST CNN, the same images, the two libraries alternating in ABBA order. advx's side is its robust-accuracy
evaluation (`attack_metrics`: best iterate, active set); torchattacks' PGD counts the final iterate, so advx's
final iterate on the same images (`pgd`, every example every step) is printed too and must agree with
torchattacks example by example. APGD-CE counts an example as fooled at any iterate in both libraries, from
starts each draws its own way, so there the two robust accuracies must agree within `APGD_SLACK`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.table import Table

from advx.attacks import Attack
from advx.data import Dataset, Split, load_dataset
from advx.evaluate import attack_metrics, error_rate
from advx.models import build_model
from advx.runtime import Runtime, eval_mode, seed_everything
from advx.schema import DatasetConfig, LoopConfig, OptimConfig, RegimeConfig
from advx.summary import results_console
from advx.train import fit

MAXOUT = {"units": 240, "pieces": 5, "layers": 2, "input_include": 0.8, "hidden_include": 0.5,
          "max_col_norm": 1.9365, "init_range": 0.005}
LIMIT = 1.05  # the speed issue's target: advx's training epoch within 5% of the bare loop's
SPEEDUP = 3.0  # the speed issue's target: evaluation at least 3x faster than torchattacks on a standard model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class BareMaxout(torch.nn.Module):
    """The same network as advx's maxout, written out by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.out = torch.nn.Linear(784, 1200), torch.nn.Linear(240, 1200), torch.nn.Linear(240, 10)
        for layer in (self.l1, self.l2, self.out):
            torch.nn.init.uniform_(layer.weight, -0.005, 0.005)
            torch.nn.init.zeros_(layer.bias)

    def forward(self, x):
        h = F.dropout(x.flatten(1), 0.2, self.training)
        h = F.dropout(self.l1(h).view(-1, 240, 5).amax(-1), 0.5, self.training)
        h = F.dropout(self.l2(h).view(-1, 240, 5).amax(-1), 0.5, self.training)
        return self.out(h)


def bare_epoch_runner(data: Dataset, device: torch.device):
    """A function that trains the hand-written maxout for one epoch per call and then computes its test error, as
    advx's epoch does (plain loops, float data)."""
    model = BareMaxout().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    images = data.train.images.float().div(255)
    labels = data.train.labels
    test_images, test_labels = data.test.images.float().div(255), data.test.labels

    def epoch() -> float:
        model.train()
        for index in torch.randperm(len(labels), device=device).split(100):
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for layer in (model.l1, model.l2, model.out):
                    layer.weight.copy_(torch.renorm(layer.weight, 2, 0, 1.9365))
        model.eval()
        with torch.no_grad():
            wrong = sum((model(x).argmax(1) != y).sum() for x, y in zip(test_images.split(1000),
                                                                       test_labels.split(1000), strict=True))
        return wrong.item() / len(test_labels)

    return epoch


def advx_epoch_runner(data: Dataset, runtime: Runtime):
    """A function that runs one full advx `fit` epoch per call: training, test evaluation, checkpoint write."""
    model = build_model("maxout", data.input_shape, 10, data.mean, data.std, **MAXOUT).to(runtime.device)
    generator = seed_everything(0)

    def epoch() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            fit(model, data, optim=OptimConfig(name="sgd", lr=0.1, momentum=0.5), regime=RegimeConfig(name="standard"),
                loop=LoopConfig(epochs=1, batch_size=100), runtime=runtime, generator=generator,
                state_path=Path(tmp) / "last.pt")

    return epoch


def _timed(fn, device: torch.device) -> float:
    """Seconds one call of `fn` takes, the device synchronised on both sides."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def interleaved(bare, ours, repeats: int, device: torch.device, warm_up: bool = True,
                ) -> tuple[list[float], list[float]]:
    """Seconds of each call of `bare` and `ours`, run in ABBA order after one warm-up call each (unless the
    caller warmed both up), so drifts in the machine's speed and any first-or-second effect hit both alike."""
    if warm_up:
        bare(), ours()
    times: dict[str, list[float]] = {"bare": [], "ours": []}
    for repeat in range(repeats):
        pair = (("bare", bare), ("ours", ours))
        for name, fn in pair if repeat % 2 == 0 else reversed(pair):
            times[name].append(_timed(fn, device))
    return times["bare"], times["ours"]


def bare_fgsm(model: torch.nn.Module, data: Dataset, eps: float) -> dict[str, float]:
    model.eval()
    wrong = adv_wrong = confidence = 0.0
    for start in range(0, len(data.test), 1000):
        x = data.test.images[start:start + 1000].float().div(255).requires_grad_(True)
        y = data.test.labels[start:start + 1000]
        logits = model(x)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), x)
        with torch.no_grad():
            adv_p = model(x + eps * grad.sign()).softmax(1)
            wrong += (logits.argmax(1) != y).sum().item()
            adv_wrong += (adv_p.argmax(1) != y).sum().item()
            confidence += adv_p.max(1).values.sum().item()
    return {"clean_error": wrong / len(data.test), "adv_error": adv_wrong / len(data.test)}


def _spread(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} ({min(times):.3f}-{max(times):.3f})"


def machine(runtime: Runtime) -> str:
    """The processor or GPU, threads, device and library versions the figures were measured with."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    gpu = f", {torch.cuda.get_device_name(runtime.device)}" if runtime.device.type == "cuda" else ""
    try:
        field = f"torchattacks {metadata.version('torchattacks')}"
    except metadata.PackageNotFoundError:
        field = "no torchattacks"
    return (f"{cpu}, {torch.get_num_threads()} threads, device {runtime.device}{gpu}, torch {torch.__version__}, "
            f"{field}")


def run_benchmark(epochs: int = 4, data_dir: str | None = None, device: str = "auto", dataset: str = "mnist",
                  part: str = "all", images: int = 1000, repeats: int = 5) -> None:
    console = results_console
    runtime = Runtime.from_config(device=device, progress=False)
    data_dir = data_dir or os.environ.get("ADVX_DATA_DIR", "data")
    sizes = {} if dataset == "mnist" else {"train_size": 1000, "test_size": 500}  # synthetic: a quick check
    data = load_dataset(DatasetConfig(name=dataset, data_dir=data_dir, **sizes), runtime.device)
    console.print(f"advx bench on {machine(runtime)}")
    if part in ("training", "all"):
        compare_bare_loops(data, runtime, epochs, console)
    if part in ("attacks", "all"):
        compare_torchattacks(data, runtime, min(images, len(data.test)), repeats, console)


def compare_bare_loops(data: Dataset, runtime: Runtime, epochs: int, console) -> None:
    """advx's training epoch and FGSM pass against bare PyTorch loops (the module docstring)."""
    torch.manual_seed(0)
    console.print(f"maxout MNIST recipe, {len(data.train)} training examples, 1 warm-up + {epochs} timed epochs per "
                  f"loop, in ABBA order")
    train_times = interleaved(bare_epoch_runner(data, runtime.device), advx_epoch_runner(data, runtime), epochs,
                              runtime.device)
    model = build_model("maxout", data.input_shape, 10, data.mean, data.std, **MAXOUT).to(runtime.device).eval()
    attack = Attack(name="fgsm", eps=0.25, clip=False)
    attack_times = interleaved(lambda: bare_fgsm(model, data, 0.25),
                               lambda: attack_metrics(model, data.test, attack, runtime), 8, runtime.device)
    ours_error = attack_metrics(model, data.test, attack, runtime)["adv_error"]
    same = abs(bare_fgsm(model, data, 0.25)["adv_error"] - ours_error)
    table = Table(title="seconds: median (min-max)")
    for column in ("workload", "bare PyTorch", "advx", "ratio of medians", f"<= {LIMIT}"):
        table.add_column(column)
    for name, (bare, ours) in (("training epoch, then the test error", train_times),
                               (f"FGSM pass over {len(data.test)} test images", attack_times)):
        ratio = statistics.median(ours) / statistics.median(bare)
        table.add_row(name, _spread(bare), _spread(ours), f"{ratio:.3f}", "yes" if ratio <= LIMIT else "NO")
    console.print(table)
    console.print(f"FGSM adversarial error, advx vs bare loop on the same model: difference {same:.4f}")


LINF, LINF_STEP, L2, L2_STEP, STEPS = 0.3, 0.01, 2.0, 0.1, 40  # Madry et al.'s MNIST radius and step; a common L2 one
BATCH = 500  # images per attack call, both libraries
CNN = {"channels": [16, 32], "hidden": 64}  # a small MNIST CNN (about 98% after one epoch) keeps the bench short
# Madry et al.'s recipe shortened to minutes; the clean half of the loss keeps so short a training from collapsing
# to one class (alpha 0 did here). About 93% clean and 30% PGD-40 accuracy on MNIST.
ROBUST = RegimeConfig(name="pgd_adv", eps=LINF, steps=3, step_size=0.15, random_start=True, alpha=0.5, clip=True)
ROBUST_EPOCHS, ROBUST_IMAGES = 2, 10000
STANDARD_IMAGES = 20000  # one epoch on a third of MNIST (about 97% clean) in a third of the full epoch's time
RANDOM_START_SLACK = 0.005  # disagreement allowed with a random start (the same seed, float differences in L2)
# APGD-CE's robust accuracies differ by start luck (each library draws its start its own way): on the robust CNN
# one seed moves either library by up to 1.4 points of 1000 images (2026-12-07), so 2 points flags a real gap
APGD_SLACK = 0.02


@dataclass(frozen=True)
class Row:
    """One compared attack: advx's and torchattacks' with the same settings."""

    label: str
    ours: Attack
    theirs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _rows(torchattacks, model: torch.nn.Module) -> list[Row]:
    """FGSM, PGD-Linf and PGD-L2 without and with random start, and APGD-CE; torchattacks' alpha = advx's step."""
    rows = [Row("FGSM Linf", Attack(name="fgsm", eps=LINF, clip=True),  # clipped, as torchattacks clips
                torchattacks.FGSM(model, eps=LINF))]
    for start in (False, True):
        tag = ", random start" if start else ""
        rows.append(Row(f"PGD-{STEPS} Linf{tag}",
                        Attack(name="pgd", eps=LINF, steps=STEPS, step_size=LINF_STEP, random_start=start),
                        torchattacks.PGD(model, eps=LINF, alpha=LINF_STEP, steps=STEPS, random_start=start)))
        rows.append(Row(f"PGD-{STEPS} L2{tag}",
                        Attack(name="pgd", eps=L2, norm="l2", steps=STEPS, step_size=L2_STEP, random_start=start),
                        torchattacks.PGDL2(model, eps=L2, alpha=L2_STEP, steps=STEPS, random_start=start)))
    rows.append(Row(f"APGD-CE Linf, {STEPS} steps",
                    Attack(name="autoattack", eps=LINF, steps=STEPS, components=("apgd-ce",)),
                    torchattacks.APGD(model, eps=LINF, steps=STEPS, loss="ce")))
    return rows


def _cnn(data: Dataset, runtime: Runtime, regime: RegimeConfig, epochs: int, train_size: int) -> torch.nn.Module:
    """advx's MNIST CNN trained with `regime` on the first `train_size` training images."""
    torch.manual_seed(0)
    model = build_model("cnn", data.input_shape, 10, data.mean, data.std, **CNN)
    subset = Dataset(**{**data.__dict__, "train": data.train.head(train_size)})
    fit(model.to(runtime.device), subset, optim=OptimConfig(name="adam", lr=1e-3), regime=regime,
        loop=LoopConfig(epochs=epochs, batch_size=128), runtime=runtime, generator=seed_everything(0))
    return model.eval()


def _models(data: Dataset, runtime: Runtime) -> dict[str, torch.nn.Module]:
    """The standard and the adversarially trained CNN, by a name that says how each was trained."""
    standard, robust = min(STANDARD_IMAGES, len(data.train)), min(ROBUST_IMAGES, len(data.train))
    mix = f"{ROBUST.alpha:g} clean + {1 - ROBUST.alpha:g} adversarial loss" if ROBUST.alpha else "adversarial loss"
    recipe = f"PGD-{ROBUST.steps} Linf {ROBUST.eps} training (step {ROBUST.step_size}, random start, {mix})"
    return {f"standard CNN: 1 epoch on {standard} images":
            _cnn(data, runtime, RegimeConfig(name="standard"), 1, standard),
            f"robust CNN: {recipe}, {ROBUST_EPOCHS} epochs on {robust} images":
            _cnn(data, runtime, ROBUST, ROBUST_EPOCHS, robust)}


def _correct(model: torch.nn.Module, craft, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Whether `model` still classifies each crafted example correctly: craft(x, y) -> x_adv in batches of BATCH.
    Seeded, so advx and torchattacks draw the same random starts."""
    torch.manual_seed(0)
    x_adv = torch.cat([craft(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, len(y), BATCH)])
    with eval_mode(model), torch.no_grad():
        return model(x_adv).argmax(1) == y


def compare_torchattacks(data: Dataset, runtime: Runtime, images: int, repeats: int, console) -> None:
    """advx's robust-accuracy evaluation against torchattacks on a standard and a robust CNN (module docstring)."""
    try:
        import torchattacks
    except ImportError:
        console.print("torchattacks is not installed: `make bench-deps` installs it (without its requests pin) for "
                      "the comparison with the field; skipping it")
        return
    split = data.test.head(images)
    problems: list[str] = []
    for name, model in _models(data, runtime).items():
        standard = name.startswith("standard")
        clean = 1 - error_rate(model, split, runtime)
        table = Table(title=f"{name} (clean accuracy {clean:.4f}); {len(split)} {data.name} test images, Linf eps "
                            f"{LINF} (step {LINF_STEP}), L2 eps {L2} (step {L2_STEP}); accuracy under attack, seconds "
                            f"(median of {repeats} in ABBA order)")
        for column in ("attack", "torchattacks (final iterate)", "advx final iterate", "differ",
                       "advx evaluation (best iterate)", "torchattacks s", "advx s", "torchattacks s / advx s",
                       f"target: {'>= ' + format(SPEEDUP, 'g') + 'x' if standard else 'no slower'}"):
            table.add_column(column)
        for row in _rows(torchattacks, model):
            cells, problem = _compare(model, split, row, repeats, runtime, SPEEDUP if standard else 1.0)
            table.add_row(*cells)
            problems += [f"{name}, {row.label}: {problem}"] if problem else []
        console.print(table)
    console.print(f"differ: examples where advx's final iterate and torchattacks' disagree, expected 0 (with a random "
                  f"start both draw from the same seed: at most {RANDOM_START_SLACK:.1%}). APGD-CE: examples where the "
                  f"two libraries' APGD-CE disagree, from starts each draws its own way (for information; their "
                  f"robust accuracies must agree within {APGD_SLACK:.0%}). The targets apply to PGD and APGD-CE; "
                  f"FGSM takes one step in both libraries.")
    for problem in problems:
        console.print(f"[bold red]DISAGREEMENT (a bug): {problem}[/]")


def _compare(model, split: Split, row: Row, repeats: int, runtime: Runtime, target: float,
             ) -> tuple[list[str], str | None]:
    """One table row (both libraries' accuracies and seconds on the same images) and what disagrees, if anything."""
    x, y = split.batch(torch.arange(len(split), device=split.labels.device))
    their_correct = _correct(model, row.theirs, x, y)  # also torchattacks' warm-up
    final_correct = _correct(model, lambda xb, yb: row.ours(model, xb, yb), x, y)  # also advx's warm-up
    evaluation: dict[str, float] = {}

    def ours() -> None:
        torch.manual_seed(0)  # the same starts as the final iterate: the best iterate can only be lower
        evaluation.update(attack_metrics(model, split, row.ours, runtime, batch_size=BATCH))

    their_times, our_times = interleaved(lambda: _correct(model, row.theirs, x, y), ours, repeats, runtime.device,
                                         warm_up=False)
    ratio = statistics.median(their_times) / statistics.median(our_times)
    n = len(split)
    differ = int((final_correct != their_correct).sum())
    best, final, theirs = round((1 - evaluation["adv_error"]) * n), int(final_correct.sum()), int(their_correct.sum())
    if row.ours.name == "autoattack":  # any fooling iterate counts in both: compare the robust counts
        slack = max(1.0, APGD_SLACK * n)
        problem = (f"advx's APGD-CE leaves {best} examples robust, torchattacks' {theirs}"
                   if abs(best - theirs) > slack else None)
        final_cell = "– (both count any iterate)"
    else:
        slack = RANDOM_START_SLACK * n if row.ours.random_start else 0
        problem = (f"{differ} examples differ between advx's final iterate and torchattacks" if differ > slack else
                   f"best iterate right on {best} examples, more than the final iterate's {final}"
                   if best > final + slack else None)
        final_cell = f"{final / n:.4f}"
    met = "–" if row.ours.name == "fgsm" else "yes" if ratio >= target else "NO"
    return [row.label, f"{theirs / n:.4f}", final_cell,
            f"[bold red]{differ}[/]" if problem else str(differ), f"{best / n:.4f}",
            f"{statistics.median(their_times):.2f}", f"{statistics.median(our_times):.2f}", f"{ratio:.2f}x",
            met], problem
