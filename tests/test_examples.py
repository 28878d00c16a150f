"""The examples in examples/ run offline, end to end, as a user would start them.

Each runs in a fresh Python process from a temporary directory: Ray's workers import
from their working directory first, and a source checkout's ``flrd/`` folder lacks the
``flrd.clients`` & co. that the installed wheel maps.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from flrd.strategies.server_app import parse_report

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ROUNDS = 3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["own_model.py", "flwr_datasets_partitioner.py"])
def test_example_runs_and_reports_each_round(name, tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = parse_report(done.stdout)
    assert [int(row["round"]) for row in rows] == list(range(1, ROUNDS + 1)), done.stdout
    assert all(row["used"] == row["sent"] == 4 and row["bits"] > 0 for row in rows)
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("uplink: ") and float(last.split()[1]) == pytest.approx(
        sum(row["bits"] for row in rows), rel=1e-3)


def test_own_model_example_is_under_40_lines():
    """Non-blank, non-comment lines, the module docstring excluded."""
    source = (EXAMPLES / "own_model.py").read_text()
    docstring = ast.parse(source).body[0]
    skip = range(docstring.lineno, docstring.end_lineno + 1)
    lines = [line for number, line in enumerate(source.splitlines(), 1)
             if line.strip() and not line.strip().startswith("#") and number not in skip]
    assert len(lines) < 40
