"""The one vocabulary of argument checks: one phrasing for each kind of check.

Every message reads ``<name> must be <allowed>, got <value>``::

    check_int("n_steps", 0, low=1)                 # n_steps must be an integer >= 1, got 0
    check_real("lr", -1.0, low=0, open_low=True)   # lr must be a number > 0, got -1.0
    check_choice("solver", "x", ("ista", "omp"))   # solver must be one of ['ista', 'omp'], got 'x'

Config dataclasses prefix the field (``"TrainConfig.lr"``) so the message names its home.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def require(ok: bool, name: str, value: object, allowed: str) -> None:
    """Raise ``ValueError("<name> must be <allowed>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_positive(v: object) -> bool:
    return is_real(v) and v > 0


def _bounds(low, high, open_low: bool = False, open_high: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    if low is not None:
        return f"{'>' if open_low else '>='} {low}"
    if high is not None:
        return f"{'<' if open_high else '<='} {high}"
    return ""


def _within(v, low, high, open_low: bool, open_high: bool) -> bool:
    if low is not None and (v <= low if open_low else v < low):
        return False
    return not (high is not None and (v >= high if open_high else v > high))


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``; else a ValueError naming it."""
    allowed = f"an integer {_bounds(low, high)}".rstrip()
    require(is_int(value) and _within(value, low, high, False, False), name, value, allowed)
    return value  # type: ignore[return-value]


def check_real(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """``value`` if it is a finite number within the bounds (open where asked); else ValueError."""
    allowed = f"a number {_bounds(low, high, open_low, open_high)}".rstrip()
    ok = is_real(value) and _within(value, low, high, open_low, open_high)
    require(ok, name, value, allowed)
    return value  # type: ignore[return-value]


def check_choice(name: str, value: object, choices: Iterable) -> object:
    """``value`` if it is one of ``choices``; else a ValueError listing them."""
    choices = list(choices)
    require(value in choices, name, value, f"one of {choices}")
    return value
