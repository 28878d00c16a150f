"""flrd.theory.checks: every check names the argument and the bound it broke."""

import numpy as np
import pytest

from flrd.theory import checks


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: checks.finite("x", [1.0, np.inf]), "x must be finite"),
        (lambda: checks.finite("x", "abc"), "x must be a finite number"),
        (lambda: checks.nonnegative("v", -1e-300), "v must be >= 0"),
        (lambda: checks.positive("p", 0.0), "p must be > 0"),
        (lambda: checks.in_range("f", 1.5, 0.0, 1.0), r"f must be in \[0, 1\]"),
        (lambda: checks.in_range("f", 0.0, 0.0, 1.0, low_open=True), r"f must be in \(0, 1\]"),
        (lambda: checks.in_range("f", np.nan, 0.0, 1.0), "f must be finite"),
        (lambda: checks.integer("n", 2.5), "n must be an integer"),
        (lambda: checks.integer("n", True), "n must be an integer"),
        (lambda: checks.integer("n", "3"), "n must be an integer"),
        (lambda: checks.integer("n", -7, minimum=0), "n must be >= 0"),
        (lambda: checks.integer("n", 9, maximum=8), "n must be <= 8"),
        (lambda: checks.workers(0.5), "K must be >= 1"),
    ],
)
def test_checks_name_the_bound(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_checks_return_validated_values():
    assert checks.integer("n", 3.0, minimum=0) == 3 and isinstance(checks.integer("n", np.int64(4)), int)
    assert checks.in_range("f", [0.0, 1.0], 0.0, 1.0).dtype == np.float64
    assert float(checks.positive("p", 2)) == 2.0
