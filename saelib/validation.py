"""Small checks shared by the config dataclasses: one message shape, naming the parameter."""

from __future__ import annotations

import math


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
