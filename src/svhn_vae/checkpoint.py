"""Run folders and checkpoints, written atomically and loaded with ``weights_only=True``.

A run folder holds ``config.json``, ``metrics.jsonl``, ``checkpoints/{last,best}.pt`` and figures.
A checkpoint is a plain dict::

    {"format_version": 2, "config": {...}, "model": state_dict, "optimizer": state_dict | None,
     "scheduler": state_dict, "epoch": int, "representation": {...}, "train_state": {...},
     "position": None | {"step": int, "totals": tensor, "order_rng": tensor}}

``epoch`` counts whole epochs done; ``position`` (absent in older checkpoints) says how far the next
one got when the checkpoint was written inside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from svhn_vae.atomic import atomic_write, write_json
from svhn_vae.config import Config
from svhn_vae.errors import UserError
from svhn_vae.models import VAE, build_vae
from svhn_vae.representation import Representation
from svhn_vae.runlock import LOCK_FILE

FORMAT_VERSION = 2
"""2: heads keep the data variance, representations say whether they dequantize, the LR schedule is saved."""
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


def checkpoint_path(run_dir: Path, which: str = "last") -> Path:
    """Where a run folder keeps its checkpoint ``which`` (``last`` or ``best``): ``RUN/checkpoints/<which>.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{which}.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save a checkpoint dict atomically: an interrupted save leaves the previous file intact."""
    with atomic_write(path) as tmp:
        torch.save({"format_version": FORMAT_VERSION, **state}, tmp)


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; a missing, corrupt or incompatible file is a one-line error."""
    path = Path(path)
    if path.is_dir():
        path = checkpoint_path(path, "best" if checkpoint_path(path, "best").exists() else "last")
    if not path.exists():
        raise UserError(f"no checkpoint at {path}; train first with 'svhn-vae train --run-dir ...'")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise UserError(f"cannot read checkpoint {path} ({type(e).__name__}); it is corrupt or not a checkpoint") from None
    version = ckpt.get("format_version") if isinstance(ckpt, dict) else None
    if version != FORMAT_VERSION:
        raise UserError(
            f"checkpoint {path} has format version {version}, this svhn-vae reads version {FORMAT_VERSION}; "
            "use the svhn-vae release that wrote it or retrain"
        )
    return ckpt


def check_run_dir(run_dir: Path, config: Config, *, resume: bool, overwrite: bool) -> bool:
    """Raise if the run folder cannot be used as asked; writes nothing. Returns whether a run is there."""
    run_dir = Path(run_dir)
    exists = (run_dir / CONFIG_FILE).exists()
    if exists and resume:
        if _without_epochs(load_run_config(run_dir)) != _without_epochs(config):
            raise UserError(f"--resume: the settings differ from those stored in {run_dir / CONFIG_FILE}; "
                            "resume without changing flags (only --epochs may change), or start a new --run-dir")
    elif exists and not overwrite:
        raise UserError(f"run folder {run_dir} already holds a run; pass --resume to continue it "
                        "or --overwrite to replace it")
    return exists


def prepare_run_dir(run_dir: Path, config: Config, *, resume: bool, overwrite: bool) -> bool:
    """Create (or reopen) a run folder; returns True when resuming from a checkpoint.

    An existing run is never overwritten without ``overwrite``; resuming checks that the stored
    config matches the requested one, so a resumed run cannot silently change its settings.
    """
    run_dir = Path(run_dir)
    exists = check_run_dir(run_dir, config, resume=resume, overwrite=overwrite)
    if exists and resume:
        write_json(run_dir / CONFIG_FILE, config.to_dict())
        if not checkpoint_path(run_dir).exists():  # killed before the first checkpoint: start afresh
            truncate_metrics(run_dir, last_epoch=0)
            return False
        return True
    if exists:  # everything but the lock file, which the caller may hold
        for child in run_dir.iterdir():
            if child.name != LOCK_FILE:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG_FILE, config.to_dict())
    return False


def load_run_config(run_dir: Path) -> Config:
    """The configuration a run folder was trained with (its ``config.json``); a UserError if it is not a run."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise UserError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); train one with 'svhn-vae train --run-dir'")
    return Config.from_saved(json.loads(path.read_text()))


def _without_epochs(config: Config) -> dict[str, Any]:
    d = config.to_dict()
    d["train"].pop("epochs")
    return d


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one epoch's record to ``metrics.jsonl`` as a JSON line, flushed to disk before returning."""
    with open(Path(run_dir) / METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Per-epoch records of ``metrics.jsonl`` (a torn last line from a kill is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def truncate_metrics(run_dir: Path, *, last_epoch: int) -> None:
    """Drop records after ``last_epoch`` (written after the checkpoint a resume starts from)."""
    kept = [r for r in read_metrics(run_dir) if r.get("epoch", 0) <= last_epoch]
    with atomic_write(Path(run_dir) / METRICS_FILE) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))


@dataclass
class TrainedModel:
    """A VAE in eval mode with what is needed to map it back to images."""

    config: Config
    model: VAE
    representation: Representation
    run_dir: Path | None
    epoch: int


def load_trained(path: str | Path, *, which: str = "best", device: str | torch.device = "cpu") -> TrainedModel:
    """Load a run folder (its ``which`` checkpoint, falling back to last) or a checkpoint file."""
    path = Path(path)
    run_dir = path if path.is_dir() else None
    file = path
    if run_dir is not None:
        file = checkpoint_path(run_dir, which)
        file = file if file.exists() else checkpoint_path(run_dir, "last")
    state = load_checkpoint(file, map_location=device)
    config = Config.from_saved(state["config"])
    rep = Representation.from_state_dict(state["representation"])
    model = build_vae(config.model, data_dim=rep.data_dim, image_shape=rep.image_shape)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"checkpoint {file} does not match its own config ({str(e).splitlines()[0]})") from None
    return TrainedModel(config, model.to(device).eval(), rep, run_dir, int(state["epoch"]))
