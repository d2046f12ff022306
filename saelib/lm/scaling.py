"""A power law in the number of latents, fitted as Gao et al. (2024, section 3) fit theirs.

    law = fit_power_law(widths, fvus)      # FVU(n) = a n^-b, least squares in log space
    law.b, law.b_err, law.residuals        # exponent, its standard error, log residuals
    law(np.geomspace(64, 512, 50))         # the fitted curve
    fit_power_law(widths, fvus, irreducible=True)   # FVU(n) = a n^-b + c, c >= 0

A power law that fits leaves no trend in the residuals ``log y - log(a n^-b)``. Gao et al.
add an irreducible term ``c`` (reconstruction error no width removes); with it the
log-log curve bends flat as ``n`` grows, which :func:`log_curvature` measures directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit

from saelib.validation import require


@dataclass(frozen=True)
class PowerLaw:
    """``y = a n^-b`` fitted to the points ``(n, y)``."""

    n: np.ndarray
    """The sizes, e.g. numbers of latents, as given."""
    y: np.ndarray
    """The values at ``n`` (e.g. FVU), > 0."""
    log_a: float
    b: float
    """The exponent: ``y`` falls as ``n^-b``."""
    b_err: float
    """The standard error of ``b`` from the least-squares covariance."""
    c: float = 0.0
    """The irreducible term (0 for a pure power law)."""

    @property
    def a(self) -> float:
        return float(np.exp(self.log_a))

    def __call__(self, n) -> np.ndarray:
        """The fitted ``a n^-b`` at ``n``."""
        return np.exp(self.log_a) * np.asarray(n, dtype=float) ** -self.b + self.c

    @property
    def residuals(self) -> np.ndarray:
        """``log y - log(a n^-b + c)`` at the fitted points."""
        return np.log(self.y) - np.log(self(self.n))


def fit_power_law(n, y, irreducible: bool = False) -> PowerLaw:
    """Least-squares fit of ``log y = log(a n^-b + c)`` (scipy's ``curve_fit``).

    ``c = 0`` unless ``irreducible`` (then ``0 <= c < min(y)``, at least four points).
    ``n`` and ``y`` are sequences of the same length, at least three points, all > 0.
    """
    n, y = np.asarray(n, dtype=float), np.asarray(y, dtype=float)
    ok = n.shape == y.shape and n.ndim == 1 and len(n) >= 3 + irreducible
    need = f"two sequences of the same length, at least {3 + irreducible}"
    require(ok, "n, y", (n.shape, y.shape), need)
    require(bool((n > 0).all() and (y > 0).all()), "n, y", (n, y), "positive")
    (log_a, b), cov = curve_fit(lambda ln, la, b: la - b * ln, np.log(n), np.log(y))
    if not irreducible:
        return PowerLaw(n, y, log_a, b, float(np.sqrt(cov[1, 1])))
    # started from the pure law (c = 0), c bounded below the smallest y
    law = lambda ln, la, b, c: np.log(np.exp(la - b * ln) + c)  # noqa: E731
    start, bounds = (log_a, b, 0.0), ([-np.inf, -np.inf, 0.0], [np.inf, np.inf, y.min()])
    (log_a, b, c), cov = curve_fit(law, np.log(n), np.log(y), p0=start, bounds=bounds)
    return PowerLaw(n, y, log_a, b, float(np.sqrt(cov[1, 1])), float(c))


def log_curvature(n, y) -> float:
    """How much the log-log curve flattens: last slope minus first slope of ``log y`` in ``log n``.

    Slopes between consecutive points (sorted by ``n``); negative while ``y`` falls. A pure
    power law gives 0; an irreducible term (the fall slows) gives > 0; an accelerating fall
    gives < 0. At least three points, all > 0.
    """
    n, y = np.asarray(n, dtype=float), np.asarray(y, dtype=float)
    require(n.shape == y.shape and n.ndim == 1 and len(n) >= 3, "n, y", (n.shape, y.shape),
            "two sequences of the same length, at least 3")  # fmt: skip
    require(bool((n > 0).all() and (y > 0).all()), "n, y", (n, y), "positive")
    order = np.argsort(n)
    slopes = np.diff(np.log(y[order])) / np.diff(np.log(n[order]))
    return float(slopes[-1] - slopes[0])
