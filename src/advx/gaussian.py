"""The Gaussian model of Ilyas et al. (2019), Section 4, numerically.

Data: y uniform in {-1, +1}, x ~ N(y mu*, Sigma*) in R^d with a skewed covariance Sigma*. A classifier is
a pair (mu, Sigma) scored by the Gaussian negative log-likelihood
    l(x, y; mu, Sigma) = 1/2 (x - y mu)^T Sigma^-1 (x - y mu) + 1/2 log det Sigma   (+ const),
and predicts sign(x^T Sigma^-1 mu), so its input gradient points along Sigma^-1 mu.

- Standard learning: the maximum-likelihood fit (sample mean of y x and sample covariance).
- Robust learning: minimise E[max_{||delta||_2 <= eps} l(x + delta, y; mu, Sigma)]. The inner maximum of a
  convex quadratic over a ball lies on the sphere, at delta = (nu I - A)^-1 A r with A = Sigma^-1,
  r = x - y mu and nu > lambda_max(A) chosen so that ||delta|| = eps (found by bisection in A's eigenbasis);
  by Danskin's theorem the outer gradient is the loss gradient at that delta. Adam on (mu, Cholesky of Sigma),
  starting from the standard fit.

The paper's Theorems 2 and 3: as eps grows the robust Sigma moves towards (a multiple of) the identity, and the
gradient Sigma^-1 mu aligns with the mean direction mu*. `fit_path` measures both along a grid of eps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GaussianTask:
    """x ~ N(y mu*, Sigma*): mu* [d], Sigma* [d, d] (float64)."""

    mean: torch.Tensor
    covariance: torch.Tensor

    @classmethod
    def skewed(cls, dim: int, smallest_std: float, seed: int) -> GaussianTask:
        """Variances log-spaced from smallest_std^2 to 1 along a random orthonormal basis; mu* of norm 1 with
        equal weight on every principal direction, so a standard classifier's gradient is far from mu*."""
        generator = torch.Generator().manual_seed(seed)
        basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        variances = torch.logspace(2 * torch.log10(torch.tensor(smallest_std)).item(), 0, dim, dtype=torch.float64)
        covariance = basis @ torch.diag(variances) @ basis.T
        mean = basis @ torch.full((dim,), dim ** -0.5, dtype=torch.float64)
        return cls(mean, covariance)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x [n, d] and y [n] in {-1, +1} (float64)."""
        y = torch.randint(0, 2, (n,), generator=generator).double() * 2 - 1
        noise = torch.randn(n, len(self.mean), generator=generator, dtype=torch.float64)
        return y[:, None] * self.mean + noise @ torch.linalg.cholesky(self.covariance).T, y


def fit_standard(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum likelihood: mu = mean(y x) [d], Sigma = covariance of x - y mu [d, d]."""
    mu = (y[:, None] * x).mean(0)
    residual = x - y[:, None] * mu
    return mu, residual.T @ residual / len(x)


def worst_perturbation(residual: torch.Tensor, precision: torch.Tensor, eps: float, iterations: int = 60,
                       ) -> torch.Tensor:
    """argmax_{||delta|| <= eps} (r + delta)^T A (r + delta) for each row r of `residual` [n, d]; A [d, d] PD."""
    a, q = torch.linalg.eigh(precision)
    r = residual @ q  # coordinates in A's eigenbasis
    top = a.max()

    def norm(nu: torch.Tensor) -> torch.Tensor:  # ||delta(nu)||, decreasing in nu > lambda_max
        return ((a * r / (nu[:, None] - a)) ** 2).sum(1).sqrt()

    low = torch.full((len(r),), float(top) * (1 + 1e-12), dtype=r.dtype)
    high = top + a.max() * r.norm(dim=1) / eps + 1e-12  # ||delta(high)|| <= eps
    for _ in range(iterations):
        middle = (low + high) / 2
        too_long = norm(middle) > eps
        low, high = torch.where(too_long, middle, low), torch.where(too_long, high, middle)
    delta = a * r / (high[:, None] - a)
    return (delta * (eps / delta.norm(dim=1, keepdim=True).clamp_min(1e-300))) @ q.T


def negative_log_likelihood(x: torch.Tensor, y: torch.Tensor, mu: torch.Tensor, scale_tril: torch.Tensor,
                            ) -> torch.Tensor:
    """Mean of l(x, y; mu, Sigma = L L^T) over the rows of x [n, d]."""
    residual = x - y[:, None] * mu
    whitened = torch.linalg.solve_triangular(scale_tril, residual.T, upper=False)
    return 0.5 * (whitened ** 2).sum(0).mean() + torch.log(torch.diagonal(scale_tril)).sum()


def fit_robust(x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 300, lr: float = 0.05,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The robust maximum-likelihood fit (mu [d], Sigma [d, d]) at L2 radius eps, from the standard fit."""
    mu0, sigma0 = fit_standard(x, y)
    if eps == 0:
        return mu0, sigma0
    mu = mu0.clone().requires_grad_(True)
    tril = torch.linalg.cholesky(sigma0)
    log_diag = torch.log(torch.diagonal(tril)).clone().requires_grad_(True)
    lower = torch.tril(tril, -1).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([mu, log_diag, lower], lr=lr)
    for _ in range(steps):
        scale_tril = torch.tril(lower, -1) + torch.diag(log_diag.exp())
        with torch.no_grad():
            sigma = scale_tril @ scale_tril.T
            delta = worst_perturbation(x - y[:, None] * mu, torch.linalg.inv(sigma), eps)
        loss = negative_log_likelihood(x + delta, y, mu, scale_tril)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        scale_tril = torch.tril(lower, -1) + torch.diag(log_diag.exp())
        return mu.detach(), scale_tril @ scale_tril.T


def condition_number(sigma: torch.Tensor) -> float:
    values = torch.linalg.eigvalsh(sigma)
    return float(values.max() / values.min())


def gradient_alignment(mu: torch.Tensor, sigma: torch.Tensor, true_mean: torch.Tensor) -> float:
    """cos(Sigma^-1 mu, mu*): how well the classifier's input gradient points along the mean direction."""
    gradient = torch.linalg.solve(sigma, mu)
    return float(gradient @ true_mean / (gradient.norm() * true_mean.norm()))


def fit_path(task: GaussianTask, eps_grid: list[float], samples: int, seed: int, steps: int = 300) -> list[dict]:
    """One row per eps: the learned covariance's eigenvalues and condition number, and the gradient alignment."""
    x, y = task.sample(samples, torch.Generator().manual_seed(seed))
    rows = []
    for eps in eps_grid:
        mu, sigma = fit_robust(x, y, eps, steps=steps)
        rows.append({"eps": eps, "condition_number": condition_number(sigma),
                     "alignment": gradient_alignment(mu, sigma, task.mean),
                     "eigenvalues": torch.linalg.eigvalsh(sigma).tolist(),
                     "mean_error": float((mu - task.mean).norm())})
    return rows
