"""Run cards: ``svhn-vae export RUN OUT`` writes a self-contained folder another user loads with
one call, :func:`svhn_vae.load`.

The folder holds ``model.pt`` (weights, config and PCA arrays: a checkpoint without optimizer or
training state, loaded with ``weights_only=True``), ``card.json`` (what the model is, the
versions of Python, torch and svhn-vae that made it, the dataset and the official checksums of
its files, the training and evaluation metrics) and copies of the run's ``config.json``,
``metrics.jsonl``, ``eval.json`` and ``report.html`` where they exist. It is written into a
temporary folder first and renamed into place, so a half-written card never exists.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import svhn_vae
from svhn_vae import checkpoint as ckpt
from svhn_vae.atomic import write_json
from svhn_vae.config import Config
from svhn_vae.errors import UserError

CARD_FILE = "card.json"
MODEL_FILE = "model.pt"
COPIED = (ckpt.CONFIG_FILE, ckpt.METRICS_FILE, "eval.json", "report.html")


def dataset_record(config: Config) -> dict[str, Any]:
    """The run's dataset, splits and the official md5 of each file they are read from (None: unpublished);
    for own images, one md5 over their files' (:func:`svhn_vae.data.custom.source_digest`)."""
    from svhn_vae.data import custom, get_dataset

    data = config.data
    if custom.is_own(data.dataset):
        source = custom.OwnSource.from_name(data.dataset, resize=data.resize, test_fraction=data.test_fraction)
        return {"name": data.dataset, "train_split": data.train_split, "limit": data.limit, "resize": data.resize,
                "test_fraction": data.test_fraction, "val_fraction": data.val_fraction,
                "source_md5": custom.source_digest(source, data_dir=data.data_dir)}
    info = get_dataset(config.data.dataset)
    files: dict[str, str | None] = {}
    for split in config.data.train_split.split("+"):
        for f in (info.splits[split].images, info.splits[split].labels):
            if f is not None:
                files[f.name] = f.md5 or f.gz_md5
    return {"name": config.data.dataset, "train_split": config.data.train_split, "limit": config.data.limit,
            "val_fraction": config.data.val_fraction, "files_md5": files}


def card(state: dict[str, Any], run_dir: Path, *, which: str) -> dict[str, Any]:
    """The ``card.json`` of a checkpoint ``state`` of ``run_dir``."""
    config = Config.from_saved(state["config"])
    metrics = ckpt.read_metrics(run_dir)
    eval_path = run_dir / "eval.json"
    return {
        "svhn_vae_card": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_run": str(run_dir.resolve()),
        "checkpoint": which,
        "epoch": int(state["epoch"]),
        "preset": config.preset,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__, "svhn_vae": svhn_vae.__version__},
        "dataset": dataset_record(config),
        "train_metrics": next((r for r in metrics if r.get("epoch") == state["epoch"]), None),
        "eval": json.loads(eval_path.read_text()) if eval_path.exists() else None,
        "load": f"svhn_vae.load('<this folder>') -> model, representation, config; see {MODEL_FILE}",
    }


def export_run(run_dir: str | Path, out: str | Path, *, which: str = "best", overwrite: bool = False) -> Path:
    """Write the run card of ``run_dir``'s ``which`` checkpoint (falling back to last) into ``out``."""
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / ckpt.CONFIG_FILE).exists():
        raise UserError(f"{run_dir} is not a run folder (no {ckpt.CONFIG_FILE}); export a folder written by 'svhn-vae train'")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} already exists and is not empty; choose another folder or pass --overwrite")
    file = ckpt.checkpoint_path(run_dir, which)
    file = file if file.exists() else ckpt.checkpoint_path(run_dir, "last")
    state = ckpt.load_checkpoint(file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        ckpt.save_checkpoint(tmp / MODEL_FILE, {k: state[k] for k in ("config", "model", "representation", "epoch")})
        write_json(tmp / CARD_FILE, card(state, run_dir, which=file.stem))
        for name in COPIED:
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, tmp / name)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load(path: str | Path, *, device: str | torch.device = "cpu") -> ckpt.TrainedModel:
    """A trained model from a run card (``svhn-vae export``), a run folder or a checkpoint file:
    ``.model`` (a VAE in eval mode), ``.representation`` (the PCA), ``.config``, ``.epoch``."""
    path = Path(path)
    if (path / CARD_FILE).exists():
        return ckpt.load_trained(path / MODEL_FILE, device=device)
    return ckpt.load_trained(path, device=device)
