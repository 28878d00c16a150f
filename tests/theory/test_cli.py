"""The ``flrd theory`` job."""

from flrd.simulations.cli import main


def test_theory_table_prints_rates_and_choice(capsys):
    assert main(["theory", "--K", "10", "--sx2", "2", "--s2", "1"]) == 0
    out = capsys.readouterr().out
    assert "R_sum" in out and "R_ind" in out and "SignSGD" in out
    row = next(line for line in out.splitlines() if line.split()[:2] == ["1", "0.2"])
    assert row.split()[2:4] == ["6.7297", "10.0000"]  # Corollary 2 and R_ind at lambda = 1
    assert "lambda=1.96" in out


def test_theory_rejects_infeasible_statistics(capsys):
    assert main(["theory", "--s2", "-1"]) == 2
    assert "s2 must be >= 0" in capsys.readouterr().err
