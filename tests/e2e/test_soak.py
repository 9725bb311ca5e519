"""A CI-sized soak (tests/bench/soak.py): three members on S3 + PostgreSQL with
maintenance every few seconds, through one fault of every kind the full soak
draws from (in a random order) and one more; the table must equal the
reference model."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from soak import soak  # noqa: E402


def test_a_fleet_survives_random_faults_with_maintenance_running(binary, tmp_path):
    survived = soak(binary, faults=8, seed=7, events=16000, work=tmp_path)
    assert len(survived) == 8
