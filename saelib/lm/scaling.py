"""A power law in the number of latents, fitted as Gao et al. (2024, section 3) fit theirs.

    law = fit_power_law(widths, fvus)      # FVU(n) = a n^-b, least squares in log space
    law.b, law.b_err, law.residuals        # exponent, its standard error, log residuals
    law(np.geomspace(64, 512, 50))         # the fitted curve

A power law that fits leaves no trend in the residuals ``log y - log(a n^-b)``.
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

    @property
    def a(self) -> float:
        return float(np.exp(self.log_a))

    def __call__(self, n) -> np.ndarray:
        """The fitted ``a n^-b`` at ``n``."""
        return np.exp(self.log_a) * np.asarray(n, dtype=float) ** -self.b

    @property
    def residuals(self) -> np.ndarray:
        """``log y - log(a n^-b)`` at the fitted points."""
        return np.log(self.y) - np.log(self(self.n))


def fit_power_law(n, y) -> PowerLaw:
    """Least-squares fit of ``log y = log a - b log n`` (scipy's ``curve_fit``).

    ``n`` and ``y`` are sequences of the same length, at least three points, all > 0.
    """
    n, y = np.asarray(n, dtype=float), np.asarray(y, dtype=float)
    ok = n.shape == y.shape and n.ndim == 1 and len(n) >= 3
    require(ok, "n, y", (n.shape, y.shape), "two sequences of the same length, at least 3")
    require(bool((n > 0).all() and (y > 0).all()), "n, y", (n, y), "positive")
    (log_a, b), cov = curve_fit(lambda ln, la, b: la - b * ln, np.log(n), np.log(y))
    return PowerLaw(n, y, log_a, b, float(np.sqrt(cov[1, 1])))
