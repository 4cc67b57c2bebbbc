"""Bad input: one clear line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import json

import pytest

from conftest import TINY


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


def test_missing_dataset_says_where_it_was_expected(advx, workdir):
    result = advx("train", "dataset=mnist", f"dataset.data_dir={workdir / 'nowhere'}", "runtime.progress=false")
    assert_one_line_error(result, "MNIST not found", str(workdir / "nowhere" / "MNIST" / "raw"), "ADVX_DATA_DIR")


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
