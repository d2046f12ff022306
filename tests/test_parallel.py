"""Seeds in worker processes give what they give in this process, in order."""

from functools import partial

import pytest
import torch

from saelib.parallel import default_workers, map_seeds, seed_parts


def _draw(scale: float, seed: int) -> tuple[int, float, int]:
    g = torch.Generator().manual_seed(seed)
    return (
        seed,
        float(torch.randn(64, 64, generator=g).matmul(torch.ones(64)).sum()) * scale,
        (torch.get_num_threads()),
    )


def _fail_on_two(seed: int) -> int:
    if seed == 2:
        raise ValueError("bad seed")
    return seed


def test_workers_give_the_same_results_in_order():
    fn = partial(_draw, 2.0)
    here = map_seeds(fn, [3, 1, 2], workers=1, progress=False)
    there = map_seeds(fn, [3, 1, 2], workers=2, progress=False)
    assert here == there and [r[0] for r in here] == [3, 1, 2]
    assert {r[2] for r in there} == {1}  # each worker runs on one thread


def test_a_failing_seed_is_named():
    for workers in (1, 2):
        with pytest.raises(RuntimeError, match="seed 2 failed"):
            map_seeds(_fail_on_two, [1, 2], workers=workers, progress=False)
    with pytest.raises(ValueError, match="workers"):
        map_seeds(_fail_on_two, [1], workers=-1)


def test_default_workers():
    assert default_workers(1) == 1
    assert 1 <= default_workers(100) <= 100


def test_seed_parts_put_every_seeds_first_part_first():
    assert seed_parts([1, 2], ["long", "short"]) == [(1, "long"), (2, "long"), (1, "short"),
                                                      (2, "short")]  # fmt: skip
