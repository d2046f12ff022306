"""Checking a chapter's parameters: names, types and ranges, with messages that say what is allowed.

A notebook's ``parameters`` cell holds plain assignments; papermill may inject
overrides after it. The next cell calls

    params = check_chapter(globals(), "01_sae_zoo")

which reads the chapter's schema, ``saelib/schemas/01_sae_zoo.yaml`` (names, types, ranges
and the rules between parameters live there once), and fails on a misspelt name (any new
public global that is not in the schema), a wrong type, a value out of range or a broken
rule, naming the parameter and the allowed values. ``device`` comes back resolved.

A schema file::

    parameters:
      seed: {type: int, low: 0, doc: seeds data and SAE initialisation}
      device: {type: device}
      batch_size: {type: int, low: 1, high: n_train}       # a bound may name a parameter
      ks: {type: list, item: int, low: 1}
      tasks: {type: list, item: str, empty: true}          # [] allowed
      family_kwargs: {type: dict}
    rules:                                                 # checks across parameters
      - check: max(ks) <= d_sae
        message: every k must be at most d_sae
    claims:                                                # what the chapter tests
      - {id: ..., statement: ..., source: ..., ...}        # see saelib.claims

``chapter_claims("01_sae_zoo")`` reads the declared claims (:mod:`saelib.claims`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from saelib.claims import Claim
from saelib.claims import load as load_claims

# Globals an IPython kernel defines by itself; they are not parameters.
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


@dataclass(frozen=True)
class Param:
    """What one parameter may be: a type, an optional range or set of choices.

    ``kind`` is int, float, str, bool or list; for lists, ``item`` is the type of the
    entries and ``low``/``high``/``choices`` apply to each entry.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    item: type | None = None
    doc: str = ""
    empty: bool = False
    """Lists only: whether ``[]`` is allowed (e.g. "every task")."""

    def allowed(self) -> str:
        kind = f"list of {self.item.__name__}" if self.kind is list else self.kind.__name__
        if self.choices is not None:
            return f"{kind} in {list(self.choices)}"
        lo = "-inf" if self.low is None else self.low
        hi = "inf" if self.high is None else self.high
        return kind if (self.low, self.high) == (None, None) else f"{kind} in [{lo}, {hi}]"

    def check(self, name: str, value) -> None:
        if self.kind is list:
            if not isinstance(value, list) or not (value or self.empty):
                self._fail(name, value)
            for entry in value:
                self._check_scalar(name, entry, self.item, value)
        else:
            self._check_scalar(name, value, self.kind, value)

    def _check_scalar(self, name, value, kind, whole) -> None:
        ok_type = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok_type = True  # an int is a fine float
        if not ok_type or isinstance(value, float) and not math.isfinite(value):
            self._fail(name, whole)  # NaN compares False with any bound: refuse it by name
        if self.choices is not None and value not in self.choices:
            self._fail(name, whole)
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            self._fail(name, whole)

    def _fail(self, name, value):
        raise ValueError(f"parameter {name}={value!r} is not allowed: expected {self.allowed()}")


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def parse_value(text: str):
    """A parameter value as typed on a command line: YAML, with numbers as people write them.

    ``"1e-3"`` -> 0.001 (YAML 1.1 reads it as a string), ``"3"`` -> 3, ``"[2, 6]"`` ->
    [2, 6], ``"[1e-3, 1e-2]"`` -> [0.001, 0.01], ``"true"`` -> True, ``"gpt2"`` -> "gpt2".
    """
    return _numbers(yaml.safe_load(text))


def _numbers(value):
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


# The packages whose versions can change a chapter's printed figures.
PINNED = ("saelib", "torch", "numpy", "scipy", "scikit-learn", "transformers", "transformer-lens")


def versions(packages: tuple[str, ...] = PINNED) -> str:
    """``"python 3.11.7, saelib 0.1.0, torch 2.13.0+cpu, ..."``: what a chapter ran with.

    Chapters print it, so a figure that changes can be traced to an install that drifted
    from ``requirements.lock``; a package that is not installed shows as ``-``.
    """
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    return ", ".join([f"python {platform.python_version()}", *(f"{p} {of(p)}" for p in packages)])


def check_parameters(namespace: Mapping, spec: Mapping[str, Param]) -> dict:
    """Validate the chapter's parameters in ``namespace`` against ``spec``; return them.

    Raises ValueError for a name not in ``spec`` (listing the known ones), a missing
    parameter, or a value of the wrong type or range.
    """
    public = {
        k
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in _KERNEL_NAMES
        and not callable(v)
        and type(v).__name__ != "module"
    }
    unknown = sorted(public - set(spec))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; this chapter takes {sorted(spec)}")
    missing = sorted(set(spec) - public)
    if missing:
        raise ValueError(f"parameter(s) {missing} missing from the parameters cell")
    for name, param in spec.items():
        param.check(name, namespace[name])
    return {name: namespace[name] for name in spec}


DEVICE = Param(str, doc="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:N' or 'mps'")


def resolve_device(device: str) -> str:
    """Turn the ``device`` parameter into a torch device string ('auto' picks CUDA if present)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    ok = device in ("cpu", "cuda", "mps") or (device.startswith("cuda:") and device[5:].isdigit())
    if not ok:
        raise ValueError(
            f"parameter device={device!r} is not allowed: expected 'auto', 'cpu', 'cuda', "
            f"'cuda:N' or 'mps'"
        )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"parameter device={device!r}: CUDA is not available on this machine")
    return device


SCHEMAS = Path(__file__).with_name("schemas")
_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}
# What a rule may call: plain arithmetic over the parameters, nothing else.
_RULE_BUILTINS = {f.__name__: f for f in (abs, all, any, int, len, max, min, round, set, sum)}


def chapter_schema(chapter: str) -> dict:
    """The parsed schema of ``chapter``: its ``parameters``, ``rules`` and ``claims``."""
    path = SCHEMAS / f"{chapter}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SCHEMAS.glob("*.yaml"))
        raise ValueError(f"no parameter schema {path} for chapter {chapter!r}; known: {known}")
    schema = yaml.safe_load(path.read_text()) or {}
    return {
        "parameters": schema.get("parameters") or {},
        "rules": schema.get("rules") or [],
        "claims": schema.get("claims") or [],
    }


def chapter_claims(chapter: str) -> list[Claim]:
    """The claims ``chapter`` declares (the ``claims:`` list of its schema file)."""
    return load_claims(chapter_schema(chapter)["claims"])


def _param(entry: dict, values: Mapping, path: str) -> Param:
    kind = entry.get("type")
    if kind == "device":
        return DEVICE
    if kind not in _TYPES:
        raise ValueError(f"{path}: type {kind!r} is not one of {[*_TYPES, 'device']}")

    def bound(v):  # a bound may name another parameter
        return values[v] if isinstance(v, str) else v

    choices = entry.get("choices")
    return Param(
        _TYPES[kind],
        low=bound(entry.get("low")),
        high=bound(entry.get("high")),
        choices=tuple(choices) if choices is not None else None,
        item=_TYPES[entry["item"]] if "item" in entry else None,
        doc=entry.get("doc", ""),
        empty=bool(entry.get("empty", False)),
    )


def check_chapter(namespace: Mapping, chapter: str) -> dict:
    """Validate ``chapter``'s parameters in ``namespace`` against its schema; return them.

    Checks names, types and ranges (:func:`check_parameters`), then each rule of the
    schema; ``device`` is returned resolved (:func:`resolve_device`).
    """
    schema = chapter_schema(chapter)
    where = f"schema {chapter}.yaml"
    values = {name: namespace[name] for name in schema["parameters"] if name in namespace}
    spec = {name: _param(e, values, where) for name, e in schema["parameters"].items()}
    params = check_parameters(namespace, spec)
    for rule in schema["rules"]:
        if not eval(rule["check"], {"__builtins__": _RULE_BUILTINS}, dict(params)):  # noqa: S307
            shown = {n: params[n] for n in params if re.search(rf"\b{n}\b", rule["check"])}
            raise ValueError(f"parameters {shown}: {rule['message']} ({rule['check']})")
    if "device" in params:
        params["device"] = resolve_device(params["device"])
    return params
