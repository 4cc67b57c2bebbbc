"""Bad input: one clear line on stderr, exit code 2, no traceback, and nothing on disk changed or left behind.

One parametrised test per class of bad input (out-of-range keys, damaged files, output paths, commands that
must not touch existing runs, errors found before a run starts, messages), each through the real CLI.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch

from conftest import TINY


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> sha256 of its bytes)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["model=nope"], ["unknown model option 'nope'", "maxout", "softmax"]),
        (["model.nope=1"], ["unknown config key 'model.nope'", "units"]),
        (["nope=1"], ["unknown config key 'nope'", "seed"]),
        (["model=rbf", "model.units=3"], ["unknown config key 'model.units'", "init_beta"]),
        (["model.units=many"], ["model.units=many", "Integer"]),
        (["train.epochs=1.5"], ["train.epochs=1.5"]),
        (["attack=fgsm", "attack.eps=-0.1"], ["attack.eps must be >= 0"]),
        (["attack=fgsm", "attack.eps=[0.1,-1]"], ["attack.eps must be >= 0"]),
        (["attack=fgsm", "attack.eps=big"], ["attack.eps must be a number"]),
        (["model.input_include=1.5"], ["model.input_include must be in (0, 1]"]),
        (["runtime.device=tpu"], ["runtime.device='tpu'", "auto, cpu, cuda"]),
        (["-m", "seed=0,1", "optim.lr=0.1,-0.1"], ["optim.lr must be > 0"]),  # a bad job anywhere in the sweep
        (["train.patience=3"], ["train.patience needs a validation split"]),
    ],
)
def test_bad_training_config(advx, overrides, fragments):
    assert_one_line_error(advx("train", *TINY, *overrides), *fragments)


@pytest.mark.parametrize(("name", "title", "folder"), [("mnist", "MNIST", "MNIST"),
                                                       ("fashion_mnist", "Fashion-MNIST", "FashionMNIST")])
def test_missing_dataset_says_where_it_was_expected(advx, workdir, name, title, folder):
    result = advx("train", f"dataset={name}", f"dataset.data_dir={workdir / 'nowhere'}", "runtime.progress=false")
    assert_one_line_error(result, f"{title} not found", str(workdir / "nowhere" / folder / "raw"), "ADVX_DATA_DIR")


def test_missing_cifar_says_where_it_was_expected(advx, workdir):
    result = advx("train", "dataset=cifar10", "model=resnet18", f"dataset.data_dir={workdir}")
    assert_one_line_error(result, "CIFAR-10 not found", "cifar-10-batches-py", "download=true")


def test_attack_without_a_run(advx):
    assert_one_line_error(advx("attack"), "missing a value for 'run'")


def test_attack_on_a_dir_without_checkpoint(advx, workdir):
    (workdir / "empty").mkdir()
    assert_one_line_error(advx("attack", f"run={workdir / 'empty'}"), "no trained model", "model.pt")


def test_attack_on_a_checkpoint_that_does_not_match_its_model(advx, trained_softmax):
    sidecar = trained_softmax / "model.json"
    spec = json.loads(sidecar.read_text())
    spec["num_classes"] = 7
    sidecar.write_text(json.dumps(spec))
    assert_one_line_error(advx("attack", f"run={trained_softmax}"), "does not match its model")


def test_attack_on_an_unreadable_checkpoint(advx, trained_softmax):
    (trained_softmax / "model.pt").write_bytes(b"not a checkpoint")
    assert_one_line_error(advx("attack", f"run={trained_softmax}"), "model.pt is not a torch file")


def test_resume_of_something_that_is_not_a_run(advx, workdir):
    assert_one_line_error(advx("train", f"resume={workdir}"), "not a run dir")


def test_unknown_command_for_config(advx):
    assert_one_line_error(advx("config", "fly"), "unknown command 'fly'")


@pytest.mark.parametrize(
    ("command", "overrides", "fragment"),
    [
        ("train", ["train.eval_batch_size=0"], "train.eval_batch_size must be >= 1, got 0"),
        ("train", ["optim.schedule=step", "optim.step_every=0"], "optim.step_every must be >= 1"),
        ("train", ["model=relu_mlp", "model.width=0"], "model.width must be >= 1"),
        ("train", ["model=cnn", "model.channels=[]"], "model.channels must not be empty"),
        ("train", ["model=cnn", "model.channels=[8,0]"], "model.channels must be >= 1, got 0"),
        ("train", ["dataset.classes=[3,11]"], "dataset.classes=[3, 11] is out of range"),
        ("train", ["dataset.classes=[3,3]"], "lists a label twice"),
        ("train", ["dataset.classes=[3]"], "at least two labels"),
        ("train", ["attack=fgsm", "attack.eps=[]"], "attack.eps must not be empty"),
        ("train", ["optim.lr=nan"], "optim.lr must be > 0, got nan"),
        ("train", ["attack=fgsm", "attack.eps=inf"], "attack.eps must be >= 0, got inf"),
        ("train", ["optim.betas=[2,0.9]"], "optim.betas must be in [0, 1)"),
        ("train", ["optim.saturate_epochs=0"], "optim.saturate_epochs must be >= 1"),
        ("train", ["dataset.val_size=-1"], "dataset.val_size must be >= 0"),
        ("attack", ["run=x", "attack.batch_size=0"], "attack.batch_size must be >= 1"),
        ("attack", ["run=x", "num_examples=0"], "num_examples must be >= 1"),
        ("construct", ["drand", "source=x", "construct.chunk_size=0"], "construct.chunk_size must be >= 1"),
        ("reproduce", ["gilmer2018", "paper.scales.smoke.search_steps=0", "scale=smoke"],
         "paper.scales.*.search_steps must be >= 1"),
        ("reproduce", ["scale=smoke"], "name the paper first"),
    ],
)
def test_every_number_is_range_checked_when_composed(advx, workdir, command, overrides, fragment):
    extra = TINY if command == "train" else ["runtime=cpu"]
    assert_one_line_error(advx(command, *overrides, *extra), fragment)
    assert not (workdir / "outputs").exists()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [(["--epochs", "0"], "--epochs"), (["--device", "tpu"], "--device"), (["--dataset", "foo"], "--dataset"),
     (["--nope"], "No such option")],
)
def test_bench_options_are_checked(advx, options, fragment):
    assert_one_line_error(advx("bench", *options), fragment)


def test_usage_errors_are_one_line(advx):
    assert_one_line_error(advx("reproduce"), "Missing argument")
    assert_one_line_error(advx("fly"), "No such command")


@pytest.mark.parametrize(
    ("damage", "command", "fragment"),
    [
        (lambda run: (run / "model.pt").write_bytes(b""), "attack", "model.pt is empty"),
        (lambda run: (run / "model.pt").write_bytes((run / "model.pt").read_bytes()[:300]), "attack",
         "model.pt is damaged"),
        (lambda run: (run / "model.pt").write_bytes(pickle.dumps({"weights": [1, 2]})), "attack",
         "not a plain tensor checkpoint"),
        (lambda run: (run / "model.json").write_text("{trunc"), "attack", "model.json is damaged"),
        (lambda run: (run / "config.yaml").write_text("dataset: [unclosed"), "attack", "config.yaml is damaged"),
        (lambda run: (run / ".hydra" / "overrides.yaml").write_text("- [x"), "resume", "overrides.yaml is damaged"),
        (lambda run: (run / "checkpoint" / "last.pt").write_bytes(b"\x80garbage"), "resume", "last.pt"),
    ],
)
def test_damaged_files_are_named(advx, trained_softmax, workdir, damage, command, fragment):
    (trained_softmax / "metrics.json").unlink()  # an unfinished run, so resume has work to do
    damage(trained_softmax)
    before = snapshot(trained_softmax)
    args = [f"run={trained_softmax}", "runtime=cpu"] if command == "attack" else [f"resume={trained_softmax}"]
    result = advx("attack" if command == "attack" else "train", *args)
    assert_one_line_error(result, fragment)
    assert "weights_only" not in result.output and "Re-running" not in result.output
    assert snapshot(trained_softmax) == before
    assert not (workdir / "outputs").exists()


@pytest.mark.parametrize("where", ["file", "under_file", "long_name", "long_path"])
def test_output_paths_that_cannot_be_written(advx, workdir, where):
    (workdir / "a_file").write_text("x")
    target = {"file": workdir / "a_file", "under_file": workdir / "a_file" / "run",
              "long_name": workdir / ("n" * 300), "long_path": workdir.joinpath(*["d" * 200] * 25)}[where]
    result = advx("train", *TINY, "model=softmax", "train.epochs=1", f"hydra.run.dir={target}")
    assert_one_line_error(result, "hydra.run.dir=")
    assert sorted(p.name for p in workdir.iterdir()) == ["a_file"]


def test_a_read_only_output_dir_is_refused(advx, workdir, monkeypatch):
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)  # root ignores chmod; a real RO mount needs root
    result = advx("train", *TINY, "model=softmax", f"hydra.run.dir={workdir / 'ro' / 'run'}")
    assert_one_line_error(result, "read-only filesystem")


@pytest.mark.parametrize(
    "command",
    [
        ["train", "resume={run}", "model=maxout"],  # a resume that would change the run
        ["train", "resume={run}", "train.epochs=9"],
        ["train", *TINY, "model=softmax", "hydra.run.dir={run}"],  # a new run into a finished run's dir
        ["attack", "run={run}", "runtime=cpu", "hydra.run.dir={run}"],
        ["construct", "resume={run}"],  # the wrong command for this run dir
        ["attack", "run={run}", "runtime=cpu", "attack.eps=[]"],
        ["train", *TINY, "-m", "model=softmax,logistic", "hydra.sweep.dir={run}/../sweep"],
    ],
)
def test_refused_commands_change_nothing(advx, trained_softmax, workdir, command):
    before = snapshot(workdir)
    result = advx(*(arg.format(run=trained_softmax) for arg in command))
    assert_one_line_error(result)
    assert snapshot(workdir) == before
    assert sorted(p.name for p in workdir.iterdir()) == ["softmax"]


def test_a_sweep_is_checked_to_its_last_job_before_the_first_runs(advx, workdir):
    result = advx("train", *TINY, "model=softmax", "-m", "train.batch_size=64,0", "seed=range(0,300)",
                  f"hydra.sweep.dir={workdir / 'sweep'}")
    assert_one_line_error(result, "train.batch_size must be >= 1, got 0")
    assert not (workdir / "sweep").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["dataset=mnist", "dataset.data_dir=nowhere"],
        ["model=cnn", "dataset=spheres"],
        ["model=logistic"],
        ["train.patience=2"],
        ["runtime.device=cuda"],
        ["dataset.val_size=5000"],  # found only once the data is read: the new run dir is removed
    ],
)
def test_errors_before_the_work_starts_leave_no_run_dir(advx, workdir, overrides):
    if "runtime.device=cuda" in overrides and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = advx("train", *TINY, "model=softmax", *overrides)
    assert_one_line_error(result)
    assert not (workdir / "outputs").exists()


def test_a_state_dict_mismatch_names_keys_and_shapes(advx, trained_softmax):
    state = torch.load(trained_softmax / "model.pt", weights_only=True)
    key = next(iter(state))
    state[key] = torch.zeros(3)
    torch.save(state, trained_softmax / "model.pt")
    assert_one_line_error(advx("attack", f"run={trained_softmax}"), "does not match", key, "(3,)")


def test_unknown_nested_keys_list_the_real_alternatives(advx):
    assert_one_line_error(advx("train", *TINY, "train.nope.deeper=1"), "valid keys under 'train':", "epochs")


def test_a_finished_run_is_left_alone_on_resume(advx, trained_softmax):
    before = snapshot(trained_softmax)
    result = advx("train", f"resume={trained_softmax}")
    assert result.exit_code == 0 and "nothing to do" in result.stderr
    assert snapshot(trained_softmax) == before
