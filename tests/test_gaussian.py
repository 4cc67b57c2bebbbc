"""The Gaussian model of Ilyas et al. (2019), Sec. 4: the inner maximisation is exact, the standard fit is the
maximum-likelihood one, and robust learning moves the covariance towards the identity and aligns the gradient."""

from __future__ import annotations

import pytest
import torch

from advx.gaussian import (
    GaussianTask,
    condition_number,
    fit_path,
    fit_standard,
    gradient_alignment,
    worst_perturbation,
)


def test_worst_perturbation_beats_every_sampled_direction_and_sits_on_the_sphere():
    task = GaussianTask.skewed(6, 0.2, seed=0)
    x, y = task.sample(8, torch.Generator().manual_seed(1))
    mu, sigma = fit_standard(*task.sample(2000, torch.Generator().manual_seed(2)))
    precision = torch.linalg.inv(sigma)
    residual = x - y[:, None] * mu
    delta = worst_perturbation(residual, precision, eps=0.5)
    assert torch.allclose(delta.norm(dim=1), torch.full((8,), 0.5, dtype=torch.float64))

    def value(d):
        return ((residual[:, None] + d) @ precision * (residual[:, None] + d)).sum(-1)

    directions = torch.randn(8, 20000, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sampled = value(0.5 * directions / directions.norm(dim=-1, keepdim=True)).max(1).values
    assert (value(delta[:, None]).squeeze(1) >= sampled - 1e-9).all()


def test_standard_fit_recovers_the_generating_gaussian():
    task = GaussianTask.skewed(5, 0.3, seed=0)
    mu, sigma = fit_standard(*task.sample(50000, torch.Generator().manual_seed(0)))
    assert (mu - task.mean).norm() < 0.02
    assert (sigma - task.covariance).abs().max() < 0.02
    assert condition_number(task.covariance) == pytest.approx(1 / 0.3**2, rel=1e-6)


def test_robust_learning_moves_the_covariance_towards_identity_and_aligns_the_gradient():
    task = GaussianTask.skewed(6, 0.1, seed=0)
    rows = fit_path(task, [0.0, 0.3, 1.0], samples=2000, seed=0, steps=200)
    conditions = [r["condition_number"] for r in rows]
    alignments = [r["alignment"] for r in rows]
    assert conditions[0] > conditions[1] > conditions[2]
    assert alignments[0] < alignments[1] < alignments[2]
    assert rows[0]["alignment"] == gradient_alignment(*fit_standard(*task.sample(
        2000, torch.Generator().manual_seed(0))), task.mean)  # eps 0 is the standard fit
