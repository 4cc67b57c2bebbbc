"""Every option of every config group composes into a valid typed config (in-process Compose API)."""

from __future__ import annotations

import pytest

from advx.hydra_bridge import compose_job, group_options
from advx.schema import AttackTaskConfig, ConstructTaskConfig, TrainTaskConfig

TRAIN_CHOICES = [(g, o) for g in ("dataset", "model", "optim", "regime", "attack", "runtime", "experiment")
                 for o in group_options(g)]
REQUIRED = {"dataset=derived": ["dataset.path=somewhere"]}  # options that need a value of their own


@pytest.mark.parametrize(("group", "option"), TRAIN_CHOICES)
def test_train_option_composes(group, option):
    choice = f"{group}={option}"
    cfg = compose_job("train", [choice, *REQUIRED.get(choice, [])])
    assert isinstance(cfg, TrainTaskConfig)


@pytest.mark.parametrize("option", group_options("construct"))
def test_construct_option_composes(option):
    cfg = compose_job("construct", [f"construct={option}", "source=somewhere"])
    assert isinstance(cfg, ConstructTaskConfig) and cfg.construct.kind == option


@pytest.mark.parametrize("option", group_options("attack"))
def test_attack_option_composes(option):
    cfg = compose_job("attack", [f"attack={option}", "run=somewhere"])
    assert isinstance(cfg, AttackTaskConfig) and all(e >= 0 for e in cfg.attack.eps)


def test_scalar_eps_becomes_a_list():
    assert compose_job("attack", ["run=x", "attack.eps=0.3"]).attack.eps == [0.3]


def test_mnist_maxout_preset_is_the_recipe():
    cfg = compose_job("train", ["experiment=mnist_maxout"])
    assert (cfg.model.units, cfg.model.pieces, cfg.model.layers) == (240, 5, 2)
    assert (cfg.model.input_include, cfg.model.hidden_include, cfg.model.max_col_norm) == (0.8, 0.5, 1.9365)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.momentum_final, cfg.train.epochs) == (0.1, 0.5, 0.7, 30)
