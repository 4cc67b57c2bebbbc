"""Every option of every config group composes into a valid typed config (in-process Compose API)."""

from __future__ import annotations

import pytest
import yaml

from advx.hydra_bridge import CONF_DIR, compose_job, compose_jobs, group_options

TRAIN_CHOICES = [(g, o) for g in ("dataset", "model", "optim", "regime", "attack", "runtime", "experiment")
                 for o in group_options(g)]
REQUIRED = {"dataset=derived": ["dataset.path=somewhere"]}  # options that need a value of their own


def assert_option_applied(cfg, group: str, option: str) -> None:
    """Every value the option's YAML file sets is the value in the composed, typed config."""
    values = yaml.safe_load((CONF_DIR / group / f"{option}.yaml").read_text())
    section = getattr(cfg, group)
    for key, value in values.items():
        if (group, key) == ("attack", "eps"):  # one number or a list in YAML, a list of floats once typed
            value = [float(v) for v in (value if isinstance(value, list) else [value])]
        if key != "defaults" and (key, value) != ("path", None):  # a required value the test sets itself
            assert getattr(section, key) == value, (group, option, key)


@pytest.mark.parametrize(("group", "option"), TRAIN_CHOICES)
def test_train_option_composes(group, option):
    choice = f"{group}={option}"
    cfg = compose_job("train", [choice, *REQUIRED.get(choice, [])])
    if group != "experiment":  # a preset sets keys of several groups (checked below for mnist_maxout)
        assert_option_applied(cfg, group, option)


@pytest.mark.parametrize("option", group_options("construct"))
def test_construct_option_composes(option):
    cfg = compose_job("construct", [f"construct={option}", "source=somewhere"])
    assert_option_applied(cfg, "construct", option)


@pytest.mark.parametrize("option", group_options("attack"))
def test_attack_option_composes(option):
    cfg = compose_job("attack", [f"attack={option}", "run=somewhere"])
    assert_option_applied(cfg, "attack", option)


def test_scalar_eps_becomes_a_list():
    assert compose_job("attack", ["run=x", "attack.eps=0.3"]).attack.eps == [0.3]


def test_mnist_maxout_preset_is_the_recipe():
    cfg = compose_job("train", ["experiment=mnist_maxout"])
    assert (cfg.model.units, cfg.model.pieces, cfg.model.layers) == (240, 5, 2)
    assert (cfg.model.input_include, cfg.model.hidden_include, cfg.model.max_col_norm) == (0.8, 0.5, 1.9365)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.momentum_final, cfg.train.epochs) == (0.1, 0.5, 0.7, 30)


@pytest.mark.parametrize("extra", [
    ["model=cnn", "model.channels=[4,8]", "seed=3"], ["experiment=mnist_maxout", "optim.lr=0.3"],
    ["model=rbf", "+model.extra=1"], ["regime=pgd_adv", "regime.steps=3", "attack=pgd_l2", "attack.eps=[0.1,0.2]"],
    ["dataset.train_size=100", "dataset.classes=[1,2]"],
])
def test_composing_a_sweep_in_bulk_gives_each_job_its_full_composition(extra):
    job = ["dataset=synthetic", "runtime=cpu", *extra]
    assert compose_jobs("train", [job]) == [compose_job("train", job)]
