"""The `advx` command line (Typer). Each command forwards its Hydra overrides to `hydra_bridge.run`.

    advx train [group=option] [key=value ...] [-m]     train a model (a sweep with -m)
    advx attack run=<run dir> [attack=...] [-m]        attack a trained model
    advx construct <kind> source=<run dir>              derive D_R / D_NR / D_rand / D_det from a model
    advx probe run=<encoder run> [dataset=...]          a linear probe on an encoder's frozen features
    advx reproduce <paper> [scale=...] [-m]            re-run a paper's experiments and write its report
    advx reproduce all [scale=...]                     every paper, then one index (outputs/reproduce/all-SCALE)
    advx config <train|attack> [overrides]             print the resolved config
    advx report <run or sweep dir>                     re-render the summary of finished runs
    advx bench                                         time advx against bare loops and torchattacks
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperGroup

from advx import __version__
from advx.errors import EXIT_BAD_INPUT, AdvxError

try:  # typer >= 0.20 vendors click; earlier versions use click itself
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException


class OneLineErrors(TyperGroup):
    """The root command group: a usage error (unknown option or command, a missing argument, an option value of
    the wrong type or range) is one line on stderr and exit code 2, like every other bad input."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as error:
            if not standalone_mode:
                raise
            command = f"advx {error.ctx.info_name}" if getattr(error, "ctx", None) and error.ctx.parent else "advx"
            typer.echo(f"error: {error.format_message()} (see `{command} --help`)", err=True)
            sys.exit(EXIT_BAD_INPUT)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result


app = typer.Typer(
    cls=OneLineErrors,
    name="advx",
    help="Reproduce adversarial-examples experiments: Hydra-configured training, attacks and sweeps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": ["--help", "-h"]}


def _groups_epilog(groups: tuple[str, ...]) -> str:
    from advx.hydra_bridge import group_options

    lines = [f"{group}: {', '.join(group_options(group))}" for group in groups]
    return ("Config groups (pick one with group=option):\n\n" + "\n\n".join(lines) + "\n\nAny key can be set "
            "with key=value (see `advx config COMMAND`); -m sweeps comma lists, e.g. seed=0,1 optim.lr=0.05,0.1.")


def _report_errors(action: Callable[[], Any]) -> None:
    """Run `action`; a user error becomes one red line on stderr and exit code 2."""
    from advx.progress import print_error

    try:
        action()
    except (AdvxError, OSError) as error:
        print_error(error)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _raise(error: AdvxError) -> Callable[[], None]:
    def action() -> None:
        raise error

    return action


def _run(config_name: str, args: list[str]) -> None:
    from advx import hydra_bridge, tasks

    task = {"train": tasks.train_task, "attack": tasks.attack_task, "reproduce": tasks.reproduce_task,
            "construct": tasks.construct_task, "probe": tasks.probe_task}[config_name]
    _report_errors(lambda: hydra_bridge.run(config_name, task, args))


@app.command(context_settings=PASS_THROUGH, epilog=_groups_epilog(
    ("dataset", "model", "optim", "regime", "attack", "runtime", "experiment")))
def train(ctx: typer.Context) -> None:
    """Train a model: `advx train dataset=mnist model=maxout regime=fgsm_adv train.epochs=30`.

    Writes a run dir under outputs/train/ (config, env, per-epoch metrics.csv, checkpoint, model.pt + model.json,
    metrics.json). With `attack=fgsm` (or any attack) the final model is also attacked on the test set.
    `resume=<run dir>` continues a killed run from its last finished epoch. `-m` runs a sweep and ends with a
    table of every job's metrics (summary.csv in the sweep dir).
    """
    _run("train", ctx.args)


@app.command(context_settings=PASS_THROUGH, epilog=_groups_epilog(("attack", "runtime")))
def attack(ctx: typer.Context) -> None:
    """Attack a trained model: `advx attack run=outputs/train/<run> attack=fgsm attack.eps=[0.1,0.25]`.

    Reports clean error, adversarial error and mean confidence (overall and on misclassified examples) on the
    test set for every eps. `source=<run dir>` crafts the examples on another model (transfer). `split=val`
    attacks the held-out images of a run trained with dataset.val_size > 0, or on data derived from such a run's
    model (choose recipes there, not on the test set); `split=train`, `num_examples=N` (the first N).
    """
    _run("attack", ctx.args)


@app.command(context_settings=PASS_THROUGH, epilog=_groups_epilog(("construct", "runtime")))
def construct(ctx: typer.Context, kind: str = typer.Argument(
        None, help="robust, nonrobust, drand, ddet or dnoise (omit with resume=DIR)")) -> None:
    """Derive a dataset from a trained model (Ilyas et al. 2019): `advx construct robust source=outputs/train/<run>`.

    robust / nonrobust invert the source's penultimate representation from a random other training image (a
    robust source gives D_R, a standard one D_NR); drand / ddet relabel targeted L2 PGD examples with their
    target (random, or y+1); dnoise is D_det's leakage control (labels y+1, each image moved by a fixed random
    pattern of its new class, L2 norm construct.eps, no optimisation). Writes float images, labels and metadata
    (derived.json: source, parameters, final representation distance or targeted success rate) to a run dir
    under outputs/construct/; train on it with `advx train dataset=derived dataset.path=<dir>`. Work is saved
    in chunks: `resume=<dir>` continues a killed construction. Knobs: construct.steps, construct.step_size,
    construct.eps, construct.num_examples, seed.
    """
    args = list(ctx.args)
    if kind and "=" in kind:  # no kind given: the first override landed here
        args.insert(0, kind)
        kind = None
    if kind is None and not any(a.startswith("resume=") for a in args):
        _report_errors(_raise(AdvxError("name what to construct: advx construct robust|nonrobust|drand|ddet|dnoise "
                                        "source=<run dir> (or continue one with resume=<dir>)")))
    _run("construct", [f"construct={kind}", *args] if kind else args)


@app.command(context_settings=PASS_THROUGH, epilog=_groups_epilog(("dataset", "runtime")))
def probe(ctx: typer.Context) -> None:
    """Fit a linear probe on a trained encoder's frozen features: `advx probe run=outputs/train/<run>`.

    The encoder is any `advx train` run (a supervised model, or an encoder from regime=simclr, mae or ddpm); its
    representation is cached for the probe's training set and a softmax regression is fitted on it (probe.epochs,
    probe.lr), then scored on the clean test set (Li et al. 2023's linear evaluation). The dataset defaults to the
    encoder's own; `dataset=derived dataset.path=<construct dir>` probes on a derived dataset (tested on the
    clean test set). `probe.untrained=true` probes the architecture at its random initialisation (the control).
    Writes a run dir under outputs/probe/ with the encoder plus probe as one model: `advx attack run=<it>`.
    """
    _run("probe", ctx.args)


@app.command(context_settings=PASS_THROUGH, epilog=_groups_epilog(("paper", "runtime")))
def reproduce(ctx: typer.Context, paper: str = typer.Argument(
        ..., help="the paper, e.g. goodfellow2015, or all (every paper, then outputs/reproduce/all-SCALE/index.md)",
)) -> None:
    """Re-run a paper: `advx reproduce goodfellow2015 scale=cpu`.

    Each stage (a train, construct or attack run) lives in the stage store every reproduction shares
    (outputs/stages/, `store=DIR`), keyed by its config, the digests of the data and upstream artifacts it reads,
    and advx's code: a second invocation, or one after a kill, reuses finished stages and resumes unfinished ones;
    a retrained upstream stage or changed code reruns what depends on it. `reuse=any` also reuses stages made by
    other code (the report lists them with that code's version). Writes report.md / report.json to
    outputs/reproduce/PAPER-SCALE-seedN/: the paper's claims (reproduced, deviates, inconclusive, not_run; judged
    on 95% intervals where a value has one) and the self-checks apart, deviations, stages, environment, figures.
    Scales: smoke (seconds, synthetic data, no verdicts), cpu (real MNIST on a CPU), paper (the paper's sizes,
    GPU). `-m seed=0,1,2` runs seeds and the sweep dir gets a report judging each claim's mean on its 95% interval.
    """
    if "=" in paper:
        from advx.hydra_bridge import group_options

        _report_errors(_raise(AdvxError(f"name the paper first: advx reproduce PAPER [key=value ...], where PAPER is "
                                        f"one of {', '.join(group_options('paper'))} or all")))
    if paper == "all":
        from advx.reproduce_all import reproduce_all

        finished: list[bool] = []
        _report_errors(lambda: finished.append(reproduce_all(ctx.args)))
        if not all(finished):
            raise typer.Exit(1)
        return
    _run("reproduce", [f"paper={paper}", *ctx.args])


@app.command(context_settings=PASS_THROUGH)
def config(ctx: typer.Context, command: str = typer.Argument(
        ..., help="train, attack, construct, probe or reproduce")) -> None:
    """Print the resolved config of COMMAND with the given overrides, without running anything."""
    commands = ("train", "attack", "construct", "probe", "reproduce")
    if command not in commands:
        _report_errors(_raise(AdvxError(f"unknown command {command!r}; valid commands: {', '.join(commands)}")))
    _run(command, ["--cfg", "job", "--resolve", *ctx.args])


@app.command()
def report(directory: str = typer.Argument(..., help="a run dir or a sweep dir")) -> None:
    """Re-render the summary of finished runs: one run's final metrics, or a table of a sweep's jobs."""
    from advx.summary import summarize

    _report_errors(lambda: summarize(directory))


BenchDevice = enum.Enum("BenchDevice", {name: name for name in ("auto", "cpu", "cuda")}, type=str)
BenchData = enum.Enum("BenchData", {name: name for name in ("mnist", "synthetic")}, type=str)
BenchPart = enum.Enum("BenchPart", {name: name for name in ("all", "training", "attacks")}, type=str)


@app.command()
def bench(
    epochs: int = typer.Option(4, min=1, help="epochs timed per loop (after one warm-up epoch each)"),
    data_dir: str = typer.Option(None, help="folder holding MNIST/raw (default: $ADVX_DATA_DIR or ./data)"),
    device: BenchDevice = typer.Option("auto", help="where to run"),
    dataset: BenchData = typer.Option("mnist", help="mnist, or synthetic for a quick check"),
    part: BenchPart = typer.Option("all", help="training (advx vs bare loops), attacks (advx vs torchattacks) or all"),
    images: int = typer.Option(1000, min=1, help="test images the attack comparison uses"),
    repeats: int = typer.Option(5, min=1, help="timed calls per library and attack, after one warm-up each "
                                "(single runs vary 10-25% on a shared 2-core machine: medians of 5)"),
) -> None:
    """Time advx against bare PyTorch loops (the maxout MNIST recipe's training epoch and FGSM pass) and against
    torchattacks (FGSM, PGD-Linf, PGD-L2, APGD-CE on a standard and a robust CNN; `make bench-deps` installs it)."""
    from advx.bench import run_benchmark

    _report_errors(lambda: run_benchmark(epochs=epochs, data_dir=data_dir, device=device.value,
                                         dataset=dataset.value, part=part.value, images=images, repeats=repeats))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"advx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """advx: reproduce adversarial-examples experiments from one command line."""


def main() -> None:
    app()
