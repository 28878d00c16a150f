"""What a new user sees: one labelled line per round, little else."""

from __future__ import annotations

import logging
import re

from flower_fakes import InProcessGrid

from flrd.clients.client_app import app as client_app
from flrd.config import RunConfig
from flrd.strategies.server_app import run_server

ROUNDS = 10


def test_ten_rounds_log_at_most_fifteen_lines_all_labelled(capsys, caplog):
    config = RunConfig(num_server_rounds=ROUNDS, local_steps=2, fraction_train=1.0,
                       fraction_evaluate=0.0)
    caplog.set_level(logging.DEBUG)  # whatever reaches a handler counts
    run_server(InProcessGrid(client_app, 3), config)
    out = capsys.readouterr()
    lines = out.out.splitlines() + out.err.splitlines() + [r.getMessage() for r in caplog.records]
    assert len(lines) <= 15, "\n".join(lines)
    rounds = [line for line in lines if line.startswith("round ")]
    assert len(rounds) == ROUNDS
    for line in rounds:  # every distortion and bound says whether it was planned or measured
        for part in line.split(" | ")[1:]:
            if re.search(r"\bD\b|R_ind|R_sum|lambda", part):
                assert part.startswith(("planned", "measured")), line


def test_verbose_shows_flowers_own_log(caplog):
    config = RunConfig(num_server_rounds=1, local_steps=2, fraction_train=1.0,
                       fraction_evaluate=0.0, verbose=True)
    caplog.set_level(logging.INFO)
    run_server(InProcessGrid(client_app, 2), config)
    assert any("Aggregated MetricRecord" in r.getMessage() for r in caplog.records)
