"""Fault injection: kill -9 training, evaluation and report writing at random moments, resume, check.

A tiny model trains on a small generated ``synth-digits`` split with a checkpoint every
``--every`` optimizer steps. One uninterrupted run is the reference. Then a second run is killed
with SIGKILL at random moments (inside steps, while checkpoints, metrics or sample figures are
being written) and resumed with ``--resume`` each time until it finishes; then ``evaluate`` and
``report`` are killed at random moments and run again. After every kill:

* both checkpoints that exist load (``last.pt``, ``best.pt``),
* ``metrics.jsonl`` has one line per finished epoch, in order, none torn or repeated,
* the work lost (optimizer steps shown done by the progress bar at the kill, minus the steps in
  ``last.pt``) is at most ``--every`` (the configured checkpoint interval) plus the step in flight,
* ``eval.json`` and ``report.html`` are absent or complete.

Every finished run must equal the reference exactly: the same metrics (timings aside) and the
same final weights.

Run:  .venv/bin/python bench/faults.py [--trials 20] [--every 4] [--seed 0] [--workdir DIR]
Prints one JSON line at the end: trials, survived, max_steps_lost, steps_lost_bound, runs_finished,
runs_equal, eval_kills, report_kills, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

LIMIT, BATCH, EPOCHS = 1024, 64, 6
STEPS_PER_EPOCH = LIMIT // BATCH
TIMING = {"seconds", "images_per_s"}
BAR = re.compile(r"epoch (\d+)/\d+:\s+\d+%\|[^|\r]*\| (\d+)/(\d+)")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "svhn_vae", *args]


def train_command(data: Path, run: Path, every: int) -> list[str]:
    """A tiny training on the first LIMIT generated images, with checkpoints every ``every`` steps."""
    return _cli("train", "--preset", "fast", "--dataset", "synth-digits", "--data-dir", str(data),
                "--limit", str(LIMIT), "--components", "20", "--latent-dim", "4", "--encoder-shared", "32", "--decoder", "32",
                "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--warmup-steps", "0", "--kl-warmup-epochs", "2",
                "--checkpoint-every-steps", str(every), "--sample-every", "2", "--device", "cpu",
                "--run-dir", str(run), "--resume")


def _env() -> dict[str, str]:
    # the progress bar redrawn at every step: its last state says how far training got
    return {**os.environ, "TQDM_MININTERVAL": "0", "TQDM_MINITERS": "1", "OMP_NUM_THREADS": "1"}


def _run(cmd: list[str], log: Path, kill_after: float | None) -> bool:
    """Run ``cmd`` (stderr into ``log``); SIGKILL it after ``kill_after`` seconds if still running.
    Returns True if it was killed."""
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=_env())
        try:
            proc.wait(timeout=kill_after)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd[3:5])} failed ({proc.returncode}): {log.read_text()[-500:]}")
            return False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True


def steps_shown(log: Path) -> int:
    """Optimizer steps the progress bar showed done before the process died (0 if none)."""
    found = BAR.findall(log.read_text(errors="replace"))
    if not found:
        return 0
    epoch, done, _ = (int(v) for v in found[-1])
    return (epoch - 1) * STEPS_PER_EPOCH + -(-done // BATCH)


def checkpoint_steps(run: Path) -> int:
    """Optimizer steps saved in ``last.pt`` (0 if there is none yet)."""
    from svhn_vae import checkpoint as ckpt

    path = ckpt.checkpoint_path(run)
    if not path.exists():
        return 0
    state = ckpt.load_checkpoint(path)
    return state["epoch"] * STEPS_PER_EPOCH + (state["position"] or {}).get("step", 0)


def check_run_folder(run: Path) -> list[str]:
    """What is wrong with a (possibly killed) run folder: unloadable checkpoints, bad metrics lines."""
    from svhn_vae import checkpoint as ckpt
    from svhn_vae.errors import UserError

    problems = []
    for which in ("last", "best"):
        if ckpt.checkpoint_path(run, which).exists():
            try:
                ckpt.load_checkpoint(ckpt.checkpoint_path(run, which))
            except UserError as e:
                problems.append(f"{which}.pt: {e}")
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    epochs = []
    for i, line in enumerate(lines):
        try:
            epochs.append(json.loads(line)["epoch"])
        except (json.JSONDecodeError, KeyError):
            if i < len(lines) - 1:  # a torn last line is healed by the resume; one inside is data loss
                problems.append(f"metrics.jsonl line {i + 1} is torn")
    if epochs != list(range(1, len(epochs) + 1)):
        problems.append(f"metrics.jsonl epochs {epochs}")
    return problems


def whole(path: Path) -> bool:
    """An output file is absent, or complete: JSON that parses, HTML that reaches ``</html>``."""
    if not path.exists():
        return True
    text = path.read_text(errors="replace")
    if path.suffix != ".json":
        return text.rstrip().endswith("</html>")
    try:
        json.loads(text)
        return True
    except json.JSONDecodeError:
        return False


def same_run(a: Path, b: Path) -> bool:
    """Equal metrics (timings aside) and bit-identical final weights."""
    from svhn_vae import checkpoint as ckpt

    def terms(run: Path) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in ckpt.read_metrics(run)]

    wa = ckpt.load_checkpoint(ckpt.checkpoint_path(a))["model"]
    wb = ckpt.load_checkpoint(ckpt.checkpoint_path(b))["model"]
    return terms(a) == terms(b) and all(torch.equal(wa[k], wb[k]) for k in wa)


def kill_outputs(cmd: list[str], out: Path, work: Path, rng: random.Random, trials: int, max_delay: float) -> int:
    """Kill ``cmd`` at random moments ``trials`` times; its output must stay absent or whole. Returns
    the number of kills that left it whole, then runs it to the end (it must then be whole)."""
    intact = 0
    for _ in range(trials):
        _run(cmd, work / "side.log", rng.uniform(0.5, max_delay))
        intact += whole(out)
    _run(cmd, work / "side.log", None)
    if not whole(out):
        raise RuntimeError(f"{out} is not whole after a full run")
    return intact


def trials(work: Path, *, n_trials: int = 20, every: int = 4, seed: int = 0, side_trials: int = 3) -> dict[str, Any]:
    """The whole experiment in ``work``; returns the figures the JSON line prints."""
    rng = random.Random(seed)
    t_start = time.perf_counter()
    data = work / "data"
    for split, n in (("train", LIMIT), ("test", 256)):
        subprocess.run(_cli("-q", "data", "generate", "--dataset", "synth-digits", "--split", split,
                            "--num-examples", str(n), "--data-dir", str(data)), check=True, stdout=subprocess.DEVNULL)
    reference = work / "reference"
    t0 = time.perf_counter()
    _run(train_command(data, reference, every), work / "reference.log", None)
    duration = time.perf_counter() - t0

    survived, max_lost, finished, equal, kills = 0, 0, 0, 0, 0
    run = work / "run"
    while kills < n_trials:
        log = work / f"kill{kills}.log"
        if not _run(train_command(data, run, every), log, rng.uniform(0.0, duration)):
            finished += 1
            equal += same_run(run, reference)
            shutil.rmtree(run)  # the next kills hit a fresh run
            continue
        kills += 1
        lost = steps_shown(log) - checkpoint_steps(run)
        max_lost = max(max_lost, lost)
        problems = check_run_folder(run)
        survived += not problems and lost <= every + 1
        if problems:
            print(f"kill {kills}: {problems}", file=sys.stderr)
    _run(train_command(data, run, every), work / "last.log", None)  # finish the last killed run
    finished += 1
    equal += same_run(run, reference)

    evaluate = _cli("evaluate", str(run), "--importance-samples", "20", "--no-probe", "--no-quality", "--no-baselines")
    eval_whole = kill_outputs(evaluate, run / "eval.json", work, rng, side_trials, 4.0)
    report_whole = kill_outputs(_cli("report", str(run)), run / "report.html", work, rng, side_trials, 6.0)
    return {"trials": kills, "survived": survived, "max_steps_lost": max_lost, "steps_lost_bound": every + 1,
            "runs_finished": finished, "runs_equal": equal, "eval_kills": side_trials,
            "eval_whole": eval_whole, "report_kills": side_trials, "report_whole": report_whole,
            "seconds": round(time.perf_counter() - t_start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="kills of the training run")
    parser.add_argument("--every", type=int, default=4, help="optimizer steps between checkpoints")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = trials(args.workdir, n_trials=args.trials, every=args.every, seed=args.seed)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = trials(Path(tmp), n_trials=args.trials, every=args.every, seed=args.seed)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
