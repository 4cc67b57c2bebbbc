"""Adversarial spheres (Gilmer et al. 2018): the data, the cap bound, and the search for nearest errors.

Two concentric spheres in R^d: class 0 on radius 1, class 1 on radius R (1.3). For a model that misclassifies a
fraction mu of the inner (unit) sphere, the isoperimetric inequality bounds the mean distance from a uniform
point to the nearest error by that of a spherical cap of the same measure:

    d(E) <= d_cap(mu, d) = E[ 2 sin((theta - theta_c) / 2) ; theta > theta_c ],

theta the angle of a uniform point from the pole, theta_c the cap's angular radius. One coordinate x_1 = cos
theta follows (x_1 + 1) / 2 ~ Beta((d-1)/2, (d-1)/2), which gives both theta_c and the quadrature. For large d,
sqrt(d) x_1 ~ N(0, 1) and d_cap ~ (a Phi(a) + phi(a)) / sqrt(d), a = Phi^-1(1 - mu).

Distances are chords on the unit sphere (scale by the radius for another sphere). No [0, 1] box anywhere.
Monte Carlo rates draw from held-out streams (`runtime.held_out_generator`) that no run seed replays, and every
evaluation runs the model in eval mode (`runtime.eval_mode`), restoring the caller's mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import integrate, optimize, stats
from torch import nn

from advx.runtime import eval_mode, held_out_generator

RADIUS_OUTER = 1.3  # Gilmer et al.'s outer radius; the inner one is 1


def sample_sphere(n: int, dim: int, radius: float = 1.0, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """n points uniform on the sphere of `radius` in R^dim, [n, dim]."""
    g = torch.randn(n, dim, generator=generator).to(device)
    return radius * g / g.norm(dim=1, keepdim=True)


def sample_spheres(n: int, dim: int, radius_outer: float = RADIUS_OUTER, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """A balanced batch from both spheres: x [n, dim], labels [n] (0: radius 1, 1: radius_outer)."""
    labels = torch.randint(0, 2, (n,), generator=generator).to(device)
    x = sample_sphere(n, dim, 1.0, generator, device)
    return x * torch.where(labels == 1, radius_outer, 1.0).unsqueeze(1), labels


def cap_angle(mu: float, dim: int) -> float:
    """Angular radius theta_c of the cap holding a fraction mu of the unit sphere in R^dim."""
    half = (dim - 1) / 2
    return math.acos(2 * stats.beta.isf(mu, half, half) - 1)


def cap_bound(mu: float, dim: int) -> float:
    """d_cap(mu, d): the mean chord distance from a uniform point of the unit sphere to a cap of measure mu,
    the largest mean distance to the nearest error of any error set of that measure (exact, by quadrature)."""
    if mu <= 0:
        return math.inf
    if mu >= 1:
        return 0.0
    half = (dim - 1) / 2
    theta_c = cap_angle(mu, dim)

    def integrand(t: float) -> float:  # t = x_1 = cos(theta), density of (t + 1) / 2 ~ Beta(half, half)
        theta = math.acos(max(-1.0, min(1.0, t)))
        return 2 * math.sin((theta - theta_c) / 2) * stats.beta.pdf((t + 1) / 2, half, half) / 2

    # the density concentrates near t = 0 with width 1/sqrt(d): give quad the points where it lives
    width = 1 / math.sqrt(dim)
    upper = math.cos(theta_c)
    points = [p for p in (-8 * width, -4 * width, 0.0, 4 * width) if -1 < p < upper]
    value, _ = integrate.quad(integrand, -1.0, upper, points=points or None, limit=200, epsabs=1e-12, epsrel=1e-10)
    return value


def cap_bound_normal(mu: float, dim: int) -> float:
    """The large-d approximation (a Phi(a) + phi(a)) / sqrt(d), a = Phi^-1(1 - mu)."""
    a = stats.norm.isf(mu)
    return (a * stats.norm.cdf(a) + stats.norm.pdf(a)) / math.sqrt(dim)


@dataclass
class ErrorRate:
    """A Monte Carlo error rate with its 95% Clopper-Pearson interval (an exact upper bound at zero errors)."""

    errors: int
    samples: int
    examples: torch.Tensor | None = None  # up to `keep` misclassified points [k, d], when asked for

    @property
    def rate(self) -> float:
        return self.errors / self.samples

    @property
    def upper(self) -> float:
        if self.errors == self.samples:
            return 1.0
        return float(stats.beta.ppf(0.975 if self.errors else 0.95, self.errors + 1, self.samples - self.errors))

    @property
    def lower(self) -> float:
        return 0.0 if self.errors == 0 else float(stats.beta.ppf(0.025, self.errors, self.samples - self.errors + 1))


@torch.no_grad()
def sphere_error_rate(model: nn.Module, dim: int, radius: float, label: int, samples: int, seed: int = 0,
                      device: torch.device | str = "cpu", batch_size: int = 100_000, keep: int = 0) -> ErrorRate:
    """Errors of `model` (in eval mode, its mode restored) on `samples` uniform points of the sphere of `radius`
    (true class `label`); keeps up to `keep` of the misclassified points. The points come from the held-out
    stream `held_out_generator(seed)`, seed in [0, 2**31), which no training run replays."""
    generator = held_out_generator(seed)
    errors, kept = 0, []
    with eval_mode(model):
        for start in range(0, samples, batch_size):
            x = sample_sphere(min(batch_size, samples - start), dim, radius, generator, device)
            wrong = model(x).argmax(1) != label
            errors += int(wrong.sum())
            if keep and sum(len(k) for k in kept) < keep:
                kept.append(x[wrong][: keep - sum(len(k) for k in kept)])
    return ErrorRate(errors, samples, torch.cat(kept) if kept else None)


class CapClassifier(nn.Module):
    """An analytic classifier whose errors on the unit sphere are exactly a cap of measure mu around e_1:
    it says "outer" iff |x| > (1 + R) / 2 or x_1 / |x| >= cos(theta_c). Logits [B, 2] with a smooth margin, so
    gradients point along the sphere towards the cap (the nearest-error search's calibration)."""

    def __init__(self, mu: float, dim: int, radius_outer: float = RADIUS_OUTER, sharpness: float = 50.0):
        super().__init__()
        self.cos_c = math.cos(cap_angle(mu, dim))
        self.mid = (1 + radius_outer) / 2
        self.sharpness = sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.norm(dim=1)
        score = torch.where(norm > self.mid, torch.ones_like(norm), x[:, 0] / norm - self.cos_c)
        return torch.stack([torch.zeros_like(score), self.sharpness * score], dim=1)


class QuadraticNet(nn.Module):
    """Gilmer et al.'s quadratic network: z = W x, logit = c (sum_i alpha_i z_i^2 - 1), c > 0. Its decision
    boundary is the ellipsoid x^T M x = 1 with M = W^T diag(alpha) W. Logits [B, 2] (class 1: outer)."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.w = nn.Parameter(torch.randn(hidden, dim) / math.sqrt(dim))
        self.alpha = nn.Parameter(torch.full((hidden,), 1.0))
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x @ self.w.T
        score = self.log_scale.exp() * ((z * z) @ self.alpha - 1)
        return torch.stack([torch.zeros_like(score), score], dim=1)

    @torch.no_grad()
    def eigenvalues(self) -> torch.Tensor:
        """The alpha_i of the rotated readout: eigenvalues of M = W^T diag(alpha) W, ascending [dim]."""
        m = self.w.T.double() @ torch.diag(self.alpha.double()) @ self.w.double()
        return torch.linalg.eigvalsh(m)

    def is_perfect(self, radius_outer: float = RADIUS_OUTER) -> bool:
        """Perfect on both spheres iff every eigenvalue lies in (1/R^2, 1)."""
        lam = self.eigenvalues()
        return bool(lam.min() > 1 / radius_outer**2 and lam.max() < 1)

    def error_rates(self, radius_outer: float = RADIUS_OUTER) -> tuple[float, float]:
        """Exact error rates on the inner and outer spheres, in [0, 1].

        For x = r g/|g|, g ~ N(0, I): the inner sphere errs when sum (lambda_i - 1) g_i^2 > 0, the outer when
        sum (R^2 lambda_i - 1) g_i^2 < 0 (`weighted_chi2_positive` gives both without approximation).
        """
        lam = self.eigenvalues().cpu().numpy()
        return weighted_chi2_positive(lam - 1), weighted_chi2_positive(1 - radius_outer**2 * lam)


def weighted_chi2_positive(weights: np.ndarray) -> float:
    """P(sum_i w_i g_i^2 > 0) for g ~ N(0, I): exact up to quadrature error (relative 1e-8), tails included.

    Inverts the moment generating function M(s) = prod_i (1 - 2 s w_i)^(-1/2) along the vertical line Re s = c
    for any 0 < c < 1 / (2 max w):  P = (1/pi) int_0^inf Re[M(c + it) / (c + it)] dt  (the Bromwich integral of
    the step function). With c at the saddlepoint of log M(s) - log s the integrand is a smooth positive bump, so
    a rate of 1e-20 keeps its relative accuracy; Imhof's form (1/2 plus an integral) cancels to absolute
    accuracy only. `weights` [n], any signs; zeros are ignored.
    """
    w = np.asarray(weights, dtype=np.float64).ravel()
    w = w[w != 0]
    if not (w > 0).any():
        return 0.0
    if not (w < 0).any():
        return 1.0
    cap = 1 / (2 * w.max())  # M(s) exists for s < cap

    def log_mgf(s: complex | float) -> complex:
        return -0.5 * np.sum(np.log(1 - 2 * s * w + 0j))

    # the saddlepoint: d/ds [log M(s) - log s] = sum w / (1 - 2 s w) - 1 / s = 0, one root in (0, cap)
    c = optimize.brentq(lambda s: s * np.sum(w / (1 - 2 * s * w)) - 1, cap * 1e-12, cap * (1 - 1e-12),
                        xtol=cap * 1e-15, maxiter=500)
    at_c = log_mgf(c).real - math.log(c)
    curvature = np.sum(2 * w**2 / (1 - 2 * c * w) ** 2) + 1 / c**2  # second derivative there: the bump's width^-2

    def integrand(t: float) -> float:  # scaled by M(c) / c, so the bump is 1 at t = 0
        s = c + 1j * t
        return float(np.exp(log_mgf(s) - np.log(s) - at_c).real)

    width = 1 / math.sqrt(curvature)
    body, _ = integrate.quad(integrand, 0, 40 * width, limit=400, epsabs=1e-13, epsrel=1e-10)
    tail, _ = integrate.quad(integrand, 40 * width, np.inf, limit=400, epsabs=1e-13, epsrel=1e-10)
    return float(math.exp(at_c) * (body + tail) / math.pi)


def relu_mlp(dim: int, width: int = 1000, depth: int = 2, classes: int = 2) -> nn.Sequential:
    """Gilmer et al.'s ReLU network: `depth` hidden layers of `width` units with batch norm, `classes` logits."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(dim if i == 0 else width, width), nn.BatchNorm1d(width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, classes))


def nearest_errors(model: nn.Module, x: torch.Tensor, label: int, *, step: float = 0.01, steps: int = 400,
                   restarts: int = 4, noise: float = 0.05, bisections: int = 20,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Upper bounds [B] on the chord distance from each point of x [B, d] (all on one sphere of radius r) to
    the nearest point of the same sphere that `model` does not give `label`.

    Each restart walks on the sphere: a step of chord length ~ `step` * r along the tangent part of the gradient
    of the logit margin (best other class minus `label`), then back onto the radius; the first misclassified
    iterate ends the walk and a bisection along the great circle from x to it finds the boundary. Restart 0
    starts at x, the others at x moved by `noise` * r in
    a random tangent direction. Points already misclassified get 0; points with no error found get the
    diameter 2r (a valid, loose upper bound). The model runs in eval mode; its mode is restored.
    """
    with eval_mode(model):
        return _nearest_errors(model, x, label, step, steps, restarts, noise, bisections, generator)


def _nearest_errors(model, x, label, step, steps, restarts, noise, bisections, generator) -> torch.Tensor:
    radius = x.norm(dim=1, keepdim=True)
    target = torch.full((x.shape[0],), label, device=x.device)
    with torch.no_grad():
        best = torch.where(model(x).argmax(1) != target, 0.0, 2 * radius.squeeze(1))
    for restart in range(restarts):
        start = x if restart == 0 else _to_sphere(x + noise * radius * _tangent(
            torch.randn(x.shape, generator=generator).to(x.device), x), radius)
        found = _walk(model, start, target, radius, step, steps)
        hit = ~torch.isnan(found[:, 0])
        if hit.any():
            boundary = _bisect(model, x[hit], found[hit], target[hit], radius[hit], bisections)
            distance = (boundary - x[hit]).norm(dim=1)
            best[hit] = torch.minimum(best[hit], distance)
    return best


def _tangent(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    unit = x / x.norm(dim=1, keepdim=True)
    return v - (v * unit).sum(1, keepdim=True) * unit


def _to_sphere(v: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    return radius * v / v.norm(dim=1, keepdim=True)


def _walk(model: nn.Module, start: torch.Tensor, target: torch.Tensor, radius: torch.Tensor, step: float,
          steps: int) -> torch.Tensor:
    """The first misclassified iterate of each walk [B, d] (NaN rows where none was found)."""
    current = start.clone()
    found = torch.full_like(start, float("nan"))
    active = torch.ones(start.shape[0], dtype=torch.bool, device=start.device)
    for _ in range(steps + 1):
        with torch.no_grad():
            wrong = (model(current).argmax(1) != target) & active
        found[wrong] = current[wrong]
        active &= ~wrong
        if not active.any():
            break
        current = current.detach().requires_grad_(True)
        logits = model(current)
        # the margin, not the cross-entropy: its gradient does not vanish far from the boundary
        others = logits.masked_fill(nn.functional.one_hot(target, logits.shape[1]).bool(), -torch.inf)
        margin = others.amax(1) - logits.gather(1, target.unsqueeze(1)).squeeze(1)
        (grad,) = torch.autograd.grad(margin.sum(), current)
        direction = _tangent(grad, current.detach())
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        current = _to_sphere(current.detach() + step * radius * direction, radius)
    return found


def _bisect(model: nn.Module, x: torch.Tensor, wrong: torch.Tensor, target: torch.Tensor, radius: torch.Tensor,
            iterations: int) -> torch.Tensor:
    """The boundary point between x (right) and `wrong` along the great circle, by bisection [B, d]."""
    lo = torch.zeros(x.shape[0], 1, device=x.device)
    hi = torch.ones_like(lo)
    with torch.no_grad():
        for _ in range(iterations):
            mid = (lo + hi) / 2
            point = _to_sphere(x + mid * (wrong - x), radius)
            is_wrong = (model(point).argmax(1) != target).unsqueeze(1)
            hi = torch.where(is_wrong, mid, hi)
            lo = torch.where(is_wrong, lo, mid)
        return _to_sphere(x + hi * (wrong - x), radius)
