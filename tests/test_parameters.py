"""Chapter parameter checks: every failure names the parameter and what is allowed."""

import pytest

from saelib.parameters import Param, check_parameters, resolve_device

SPEC = {
    "seed": Param(int, low=0),
    "lr": Param(float, low=0, high=1),
    "arch": Param(str, choices=("relu", "topk")),
    "ks": Param(list, item=int, low=1, high=64),
    "tied": Param(bool),
}
GOOD = {"seed": 0, "lr": 1e-3, "arch": "relu", "ks": [2, 4], "tied": False}


def test_valid_parameters_pass_and_kernel_names_are_ignored():
    namespace = dict(GOOD, In=[], Out={}, _i1="", get_ipython=lambda: None)
    assert check_parameters(namespace, SPEC) == GOOD
    assert check_parameters(dict(GOOD, lr=1), SPEC)["lr"] == 1  # an int is a fine float


@pytest.mark.parametrize(
    "change, match",
    [
        ({"sed": 1}, r"unknown parameter\(s\) \['sed'\]; this chapter takes \['arch'"),
        ({"seed": -1}, r"parameter seed=-1 is not allowed: expected int in \[0, inf\]"),
        ({"seed": 1.5}, r"parameter seed=1.5 is not allowed: expected int"),
        ({"seed": True}, r"parameter seed=True is not allowed: expected int"),
        ({"lr": 2.0}, r"parameter lr=2.0 is not allowed: expected float in \[0, 1\]"),
        ({"arch": "gated"}, r"parameter arch='gated' .* expected str in \['relu', 'topk'\]"),
        ({"ks": [2, 0]}, r"parameter ks=\[2, 0\] .* expected list of int in \[1, 64\]"),
        ({"ks": 4}, r"parameter ks=4 .* expected list of int"),
        ({"tied": 1}, r"parameter tied=1 .* expected bool"),
    ],
)
def test_bad_parameters_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        check_parameters(dict(GOOD, **change), SPEC)


def test_missing_parameter():
    namespace = dict(GOOD)
    del namespace["lr"]
    with pytest.raises(ValueError, match=r"parameter\(s\) \['lr'\] missing"):
        check_parameters(namespace, SPEC)


def test_devices():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match="parameter device='gpu' is not allowed: expected 'auto'"):
        resolve_device("gpu")


def _write_schema(tmp_path, monkeypatch, text):
    import saelib.parameters as P

    (tmp_path / "toy.yaml").write_text(text)
    monkeypatch.setattr(P, "SCHEMAS", tmp_path)


SCHEMA = """
parameters:
  n: {type: int, low: 1}
  batch: {type: int, low: 1, high: n}
  ks: {type: list, item: int, low: 1}
  device: {type: device}
rules:
  - check: max(ks) <= n
    message: every k must be at most n
"""


def test_check_chapter_reads_the_schema(tmp_path, monkeypatch):
    from saelib.parameters import check_chapter

    _write_schema(tmp_path, monkeypatch, SCHEMA)
    good = {"n": 8, "batch": 8, "ks": [2, 8], "device": "auto"}
    assert check_chapter(good, "toy") == dict(good, device=resolve_device("auto"))
    with pytest.raises(
        ValueError, match=r"parameter batch=9 is not allowed: expected int in \[1, 8\]"
    ):
        check_chapter(dict(good, batch=9), "toy")  # a bound naming another parameter
    with pytest.raises(ValueError, match=r"parameters \{'n': 8, 'ks': \[2, 9\]\}: every k must"):
        check_chapter(dict(good, ks=[2, 9]), "toy")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['m'\]"):
        check_chapter(dict(good, m=1), "toy")
    with pytest.raises(ValueError, match=r"no parameter schema .*nope.yaml .*known: \['toy'\]"):
        check_chapter(good, "nope")


def test_empty_lists_and_dicts_only_where_declared():
    lists = {"ks": Param(list, item=int), "tasks": Param(list, item=str, empty=True)}
    assert check_parameters({"ks": [1], "tasks": []}, lists)["tasks"] == []
    with pytest.raises(ValueError, match=r"parameter ks=\[\] is not allowed: expected list of int"):
        check_parameters({"ks": [], "tasks": []}, lists)
    with pytest.raises(ValueError, match=r"parameter kw=\[\] is not allowed: expected dict"):
        check_parameters({"kw": []}, {"kw": Param(dict)})
