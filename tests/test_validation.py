"""The check vocabulary: one phrasing, naming the parameter, the allowed values and the value."""

import math

import pytest

from saelib.validation import check_choice, check_int, check_real


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: check_int("n", 0, low=1), "n must be an integer >= 1, got 0"),
        (lambda: check_int("n", True, low=0), "n must be an integer >= 0, got True"),
        (lambda: check_int("n", 2.0), "n must be an integer, got 2.0"),
        (lambda: check_int("n", 9, low=1, high=8), "n must be an integer in [1, 8], got 9"),
        (lambda: check_int("n", 9, high=8), "n must be an integer <= 8, got 9"),
        (lambda: check_real("lr", 0.0, low=0, open_low=True), "lr must be a number > 0, got 0.0"),
        (
            lambda: check_real("p", 1.0, 0, 1, open_high=True),
            "p must be a number in [0, 1), got 1.0",
        ),
        (lambda: check_real("x", math.nan), "x must be a number, got nan"),
        (lambda: check_real("x", "1"), "x must be a number, got '1'"),
        (lambda: check_choice("s", "x", ("a", "b")), "s must be one of ['a', 'b'], got 'x'"),
    ],
)
def test_failures_read_the_same_way(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


def test_values_within_bounds_come_back():
    assert check_int("n", 8, low=1, high=8) == 8
    assert check_real("p", 0, 0, 1) == 0 and check_real("p", 0.5, 0, 1, open_low=True) == 0.5
    assert check_choice("s", "a", ["a"]) == "a"
