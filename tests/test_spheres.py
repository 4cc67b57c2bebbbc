"""Adversarial spheres: the cap bound against independent computations, the search's calibration on a cap, the
quadratic network's exact error rates (against closed forms and sampling), and the gilmer2018 smoke pipeline."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, stats

from advx.runtime import held_out_generator
from advx.spheres import (
    CapClassifier,
    ErrorRate,
    QuadraticNet,
    cap_angle,
    cap_bound,
    cap_bound_normal,
    nearest_errors,
    relu_mlp,
    sample_sphere,
    sphere_error_rate,
    weighted_chi2_positive,
)
from conftest import metrics


def cap_bound_by_angle(mu: float, dim: int) -> float:
    """An independent d_cap: integrate over the polar angle with the surface density sin^(d-2)(theta)."""
    def density(theta):
        return math.exp((dim - 2) * math.log(max(math.sin(theta), 1e-300)))

    total = integrate.quad(density, 0, math.pi, limit=400, epsabs=0, epsrel=1e-12)[0]
    theta_c = optimize.brentq(lambda t: integrate.quad(density, 0, t, limit=400, epsabs=0, epsrel=1e-12)[0]
                              / total - mu, 0, math.pi, xtol=1e-14)
    def distance(theta):
        return 2 * math.sin((theta - theta_c) / 2) * density(theta)

    return integrate.quad(distance, theta_c, math.pi, limit=400, epsabs=0, epsrel=1e-12)[0] / total


@pytest.mark.parametrize("dim", [3, 10, 100, 500])
@pytest.mark.parametrize("mu", [0.3, 0.01, 1e-4])
def test_cap_bound_agrees_with_an_independent_integral(dim, mu):
    assert cap_bound(mu, dim) == pytest.approx(cap_bound_by_angle(mu, dim), rel=1e-4)


@pytest.mark.parametrize("mu", [0.5, 0.1, 0.01])
def test_cap_bound_on_the_circle_has_a_closed_form(mu):
    """d = 2: the angle is uniform on [0, pi], theta_c = pi mu, d_cap = (4/pi)(1 - cos((pi - theta_c)/2))."""
    theta_c = math.pi * mu
    assert cap_angle(mu, 2) == pytest.approx(theta_c, rel=1e-9)
    assert cap_bound(mu, 2) == pytest.approx(4 / math.pi * (1 - math.cos((math.pi - theta_c) / 2)), rel=1e-6)


def test_normal_approximation_is_the_large_d_limit():
    for mu in (0.3, 0.01, 1e-4):
        assert cap_bound_normal(mu, 20000) == pytest.approx(cap_bound(mu, 20000), rel=5e-3)
    assert cap_bound(0.5, 5000) * math.sqrt(5000) == pytest.approx(1 / math.sqrt(2 * math.pi), rel=2e-3)
    assert cap_bound(1e-4, 10) != pytest.approx(cap_bound_normal(1e-4, 10), rel=0.05)  # far off at small d


@pytest.mark.parametrize(("dim", "mu"), [(100, 0.01), (500, 0.001)])
def test_the_search_recovers_the_distance_to_a_cap(dim, mu):
    """Calibration: errors are exactly a cap, so the search must find d_cap(mu) (within 2%), point by point."""
    x = sample_sphere(4000, dim, generator=torch.Generator().manual_seed(1))
    found = nearest_errors(CapClassifier(mu, dim), x, 0, step=0.01, steps=400, restarts=1)
    theta = torch.acos(x[:, 0].double().clamp(-1, 1))
    theta_c = cap_angle(mu, dim)
    exact = torch.where(theta > theta_c, 2 * torch.sin((theta - theta_c) / 2), torch.zeros_like(theta))
    assert (found.double() - exact).abs().max() < 1e-4
    assert float(found.mean()) == pytest.approx(cap_bound(mu, dim), rel=0.02)


def quadratic_with_spectrum(eigenvalues: torch.Tensor) -> QuadraticNet:
    net = QuadraticNet(len(eigenvalues))
    with torch.no_grad():
        net.w.copy_(torch.eye(len(eigenvalues)))
        net.alpha.copy_(eigenvalues)
    return net


def test_quadratic_net_exact_rates_agree_with_sampling():
    dim = 200
    perfect = quadratic_with_spectrum(torch.linspace(0.65, 0.95, dim))
    assert perfect.is_perfect() and perfect.error_rates() == (0.0, 0.0)
    assert sphere_error_rate(perfect, dim, 1.0, 0, 50000).errors == 0
    assert sphere_error_rate(perfect, dim, 1.3, 1, 50000).errors == 0
    flawed = quadratic_with_spectrum(torch.linspace(0.9, 1.08, dim))
    assert not flawed.is_perfect()
    assert torch.allclose(flawed.eigenvalues().float(), torch.linspace(0.9, 1.08, dim), atol=1e-5)
    inner, outer = flawed.error_rates()
    sampled = sphere_error_rate(flawed, dim, 1.0, 0, 200000, seed=3)
    assert sampled.errors > 2000 and sampled.lower <= inner <= sampled.upper  # about 3%
    assert outer == 0.0  # every eigenvalue times R^2 = 1.69 exceeds 1: the outer sphere cannot err
    skewed = quadratic_with_spectrum(torch.cat([torch.full((3,), 1.6), torch.full((47,), 0.8)]))
    inner = skewed.error_rates()[0]  # skewed, d = 50: the normal approximation says 9e-4, 4x too low
    sampled = sphere_error_rate(skewed, 50, 1.0, 0, 400000, seed=4)
    assert 100 < sampled.errors and sampled.lower <= inner <= sampled.upper


@pytest.mark.parametrize(("positive", "k", "negative", "m"),
                         [(1.0, 1, 1.0, 1), (1.0, 10, 2.0, 10), (0.3, 1, 0.1, 499), (0.05, 2, 0.25, 498),
                          (0.6, 5, 0.35, 495)])
def test_weighted_chi2_matches_the_beta_closed_form_deep_in_the_tail(positive, k, negative, m):
    """a chi2_k - b chi2_m > 0 iff chi2_k / (chi2_k + chi2_m) ~ Beta(k/2, m/2) exceeds b / (a + b): an independent
    exact value, from 0.5 down to 1e-194, which the contour inversion must match to 1e-8 relative."""
    weights = np.r_[np.full(k, positive), np.full(m, -negative)]
    expected = stats.beta.sf(negative / (positive + negative), k / 2, m / 2)
    assert weighted_chi2_positive(weights) == pytest.approx(expected, rel=1e-8)
    assert weighted_chi2_positive(-weights) == pytest.approx(1 - expected, rel=1e-8)


def test_weighted_chi2_degenerate_signs():
    assert weighted_chi2_positive(np.array([-1.0, -0.5, 0.0])) == 0.0  # never positive
    assert weighted_chi2_positive(np.array([0.2, 0.0])) == 1.0  # positive almost surely


def test_sphere_error_rate_runs_in_eval_mode_and_restores_train_mode():
    """A batch-norm MLP in train mode: the Monte Carlo rate uses the running statistics (it equals the eval-mode
    rate), leaves them untouched, and hands the model back in train mode."""
    torch.manual_seed(0)
    model = relu_mlp(10, width=16, depth=1)
    with torch.no_grad():
        model.train()(torch.randn(256, 10) * 2 + 0.5)  # running statistics far from a unit sphere's
    frozen = [b.clone() for b in model.buffers()]
    reference = sphere_error_rate(copy.deepcopy(model).eval(), 10, 1.0, 0, 3000, seed=5, batch_size=500)
    rate = sphere_error_rate(model.train(), 10, 1.0, 0, 3000, seed=5, batch_size=500)
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), frozen, strict=True))
    assert rate.errors == reference.errors
    assert nearest_errors(model, sample_sphere(4, 10), 0, steps=5, restarts=1).shape == (4,) and model.training


def test_monte_carlo_points_come_from_a_held_out_stream():
    """sphere_error_rate(seed=s) draws from runtime.held_out_generator(s), never from a run seed's stream."""
    says_outer = torch.nn.Linear(10, 2)  # logits [0, 1] everywhere: every inner point is an error, and kept
    with torch.no_grad():
        says_outer.weight.zero_()
        says_outer.bias.copy_(torch.tensor([0.0, 1.0]))
    kept = sphere_error_rate(says_outer, 10, 1.0, 0, 50, seed=3, keep=50).examples
    assert torch.equal(kept, sample_sphere(50, 10, generator=held_out_generator(3)))
    for run_seed in (0, 3):  # the run generators seed_everything(0) and (3) would make
        assert not torch.allclose(kept, sample_sphere(50, 10, generator=torch.Generator().manual_seed(run_seed)))


def test_error_rate_interval():
    assert ErrorRate(0, 1_000_000).upper == pytest.approx(3.0e-6, rel=0.01)  # the rule of three
    interval = ErrorRate(50, 10000)
    assert interval.lower < 0.005 < interval.upper


def test_spheres_train_through_the_cli(advx, workdir):
    run_dir = workdir / "quadratic"
    result = advx("train", "dataset=spheres", "dataset.dim=20", "dataset.train_size=20000", "model=quadratic",
                  "optim=adam", "optim.lr=0.01", "train.epochs=3", "runtime=cpu", f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.output
    assert metrics(run_dir)["test_error"] < 0.05


def test_gilmer2018_smoke_pipeline(advx, workdir):
    out = workdir / "spheres"
    result = advx("reproduce", "gilmer2018", "scale=smoke", "runtime=cpu", f"hydra.run.dir={out}")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    claims = {c["id"]: c for c in report["claims"] + report.get("checks", [])}  # self-checks are listed apart
    gap = claims["calibration_max_gap"]  # the search finds the analytic cap's nearest errors, within sampling error
    assert gap["low"] <= gap["measured"] <= gap["high"] and gap["status"] != "deviates"
    ratio = claims["bound_max_ratio"]  # Theorem 5.1: d(E) <= d_cap(mu), a ratio below 1 (within the paper's 2%)
    assert 0 < ratio["low"] <= ratio["measured"] <= ratio["high"] and ratio["measured"] <= 1.02
    for figure in ("distance_vs_error_rate.png", "collapse.png"):
        assert (out / figure).stat().st_size > 1000
    exact = claims["quadratic_exact_vs_mc"]  # sampling agrees with every quadratic snapshot's exact rate
    assert exact["status"] == "reproduced", exact
    assert "tail_max_ratio" in claims  # measured at every scale, judged only on real scales
    # header + dims x models x budgets + the longer quadratic runs at tail_dim
    assert len((out / "points.csv").read_text().splitlines()) == 1 + 2 * 2 * 2 + 1
