"""The run-folder lock: a second writer is refused at once, a killed holder leaves nothing to clean."""

import os
import signal
import subprocess
import sys

import pytest

from svhn_vae.cli import main
from svhn_vae.errors import UserError
from svhn_vae.runlock import LOCK_FILE, RunFolderBusy, run_lock
from svhn_vae.train import TrainData, train
from test_train import synthetic_images, tiny_config

HOLD = "import sys, time; from svhn_vae.runlock import run_lock\nwith run_lock(sys.argv[1]):\n" \
       "    print('locked', flush=True); time.sleep(120)"


@pytest.fixture
def holder(tmp_path):
    """A separate process holding the lock of tmp_path / 'run'; yields (run folder, process)."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield run, proc
    proc.kill()
    proc.wait()


def test_second_writer_is_refused_naming_the_holder(holder, capsys):
    run, proc = holder
    with pytest.raises(RunFolderBusy, match=f"PID {proc.pid} on "):
        train(tiny_config(), run_dir=run, data=TrainData(synthetic_images(64, (8, 8, 1))))
    assert main(["-q", "train", "--run-dir", str(run), "--dataset", "mnist", "--no-download"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"is in use by PID {proc.pid}" in error


def test_killed_holder_releases_the_lock_without_clean_up(holder):
    run, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run / LOCK_FILE).exists()  # the stale file stays; it is not what locks
    result = train(tiny_config(epochs=1), run_dir=run, data=TrainData(synthetic_images(64, (8, 8, 1))))
    assert len(result.history) == 1
    with run_lock(run):  # and released again when training ends
        pass


def test_failed_start_leaves_no_empty_run_folder(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(UserError):
        train(tiny_config().replace("data", dataset="mnist", data_dir=str(tmp_path / "nothing")), run_dir=run)
    assert not run.exists()


def test_overwrite_keeps_the_held_lock_file(tmp_path):
    run = tmp_path / "run"
    data = TrainData(synthetic_images(64, (8, 8, 1)))
    train(tiny_config(epochs=1), run_dir=run, data=data)
    train(tiny_config(epochs=1), run_dir=run, data=data, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == sorted([LOCK_FILE, "checkpoints", "config.json", "metrics.jsonl"])


def test_evaluate_and_report_are_writers_too(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config(epochs=1), run_dir=run, data=TrainData(synthetic_images(64, (8, 8, 1))))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        for command in (["evaluate", str(run), "--no-baselines"], ["report", str(run)]):
            assert main(["-q", *command]) == 2
            assert f"is in use by PID {proc.pid}" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()
    assert not (run / "eval.json").exists() and not (run / "report.html").exists()
