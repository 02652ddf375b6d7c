"""A fast subset of bench/faults.py: training, evaluation and report killed with SIGKILL and resumed."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "faults.py"


def test_kill_9_at_random_moments_loses_nothing(tmp_path):
    spec = importlib.util.spec_from_file_location("faults", BENCH)
    faults = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faults)
    result = faults.trials(tmp_path, n_trials=3, every=4, seed=1, side_trials=1)
    assert result["trials"] == 3 and result["survived"] == 3
    assert result["max_steps_lost"] <= result["steps_lost_bound"]
    assert result["runs_finished"] >= 1 and result["runs_equal"] == result["runs_finished"]
    assert result["eval_whole"] == 1 and result["report_whole"] == 1
