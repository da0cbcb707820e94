"""Exact binomial confidence bounds without SciPy.

The Clopper–Pearson bounds for k successes in n trials are quantiles of Beta distributions:
lower = B⁻¹(α; k, n − k + 1) and upper = B⁻¹(1 − α; k + 1, n − k) for one-sided level 1 − α. The
Beta CDF is the regularised incomplete beta function I_x(a, b), evaluated here by its continued
fraction (modified Lentz's method, on the side x < (a + 1)/(a + b + 2) where it converges fast, and
through I_x(a, b) = 1 − I_{1−x}(b, a) on the other), and inverted by bisection: I_x is increasing in
x, so 200 halvings of [0, 1] reach double precision whatever the shape.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from ..errors import ConfigError

_EPS = 1e-15
_TINY = 1e-300


def _continued_fraction(x: float, a: float, b: float) -> float:
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return h


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the CDF at ``x`` of a Beta(a, b) distribution (a, b > 0)."""
    if a <= 0 or b <= 0:
        raise ConfigError(f"Beta parameters must be positive, got a={a}, b={b}")
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _continued_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _continued_fraction(1 - x, b, a) / b


def beta_quantile(q: float, a: float, b: float) -> float:
    """The ``q``-quantile of Beta(a, b), by bisection on :func:`regularized_beta`."""
    if not 0 <= q <= 1:
        raise ConfigError(f"a quantile level lies in [0, 1], got {q}")
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if regularized_beta(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _check_counts(k: int, n: int, alpha: float) -> None:
    if not (isinstance(n, int) and isinstance(k, int) and 0 <= k <= n and n >= 1):
        raise ConfigError(f"need whole numbers 0 ≤ k ≤ n with n ≥ 1, got k={k}, n={n}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha}")


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided (1 − α) lower confidence bound on a binomial proportion from k of n."""
    _check_counts(k, n, alpha)
    return 0.0 if k == 0 else beta_quantile(alpha, k, n - k + 1)


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided (1 − α) upper confidence bound on a binomial proportion from k of n."""
    _check_counts(k, n, alpha)
    return 1.0 if k == n else beta_quantile(1 - alpha, k + 1, n - k)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p) (= I_p(k, n − k + 1))."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return regularized_beta(p, k, n - k + 1)


def two_sided_binomial_test_half(k: int, n: int) -> float:
    """Two-sided p-value of k successes in n trials against p = ½ (the test of Cohen et al.'s PREDICT)."""
    k = max(k, n - k)
    return min(1.0, 2 * binomial_tail(k, n, 0.5))


def normal_quantile(p: float) -> float:
    """Φ⁻¹(p)."""
    return NormalDist().inv_cdf(p)
