"""The training loop: Adam, a learning-rate schedule, early stopping, a NaN guard, checkpoints
every epoch (and inside long epochs, or on Ctrl-C), exact resume.

``train`` is one readable function; the helpers above it do one thing each. Metrics are per-example
nats. The loop keeps the training set in memory on the training device in its stored form (uint8
pixels, dequantized and projected batch by batch with fresh noise, or PCA codes computed once).
The concerns around the loop live in their own modules: the run-folder lock (:mod:`runlock`),
signals and mid-epoch checkpoints (:mod:`interruption`), bf16 autocast (:mod:`precision`),
failed writes (:mod:`atomic`) and non-finite metrics (:mod:`finite`).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm

from svhn_vae import checkpoint as ckpt
from svhn_vae import compilation, distributed
from svhn_vae.atomic import disk_errors
from svhn_vae.config import AUTO_LIKELIHOOD, Config, for_images
from svhn_vae.data.loading import image_shape, joined_split
from svhn_vae.distributed import World
from svhn_vae.errors import UserError
from svhn_vae.finite import check_finite
from svhn_vae.interruption import CheckpointClock, StopRequest, TrainingStopped
from svhn_vae.models import VAE, build_vae, loss_from_terms
from svhn_vae.precision import autocast
from svhn_vae.representation import Representation, training_input
from svhn_vae.runlock import holding_run_lock
from svhn_vae.schedule import make_scheduler, scale_base_lrs
from svhn_vae.semi_supervised import Labels, choose_labelled
from svhn_vae.tracking import TensorBoardLog

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss became NaN/Inf more often than the NaN guard may recover."""


@dataclass
class TrainData:
    """uint8 images (N, H, W, C) to train on, optional validation images, and for M2 the labels."""

    images: np.ndarray
    val_images: np.ndarray | None = None
    labels: np.ndarray | None = None
    """(N,) the training images' labels; training reads only those of ``labelled``."""
    labelled: np.ndarray | None = None
    """Indices of the examples whose labels training may read (see :mod:`svhn_vae.semi_supervised`)."""


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model, its representation (the PCA), the per-epoch
    metrics and whether early stopping ended it."""
    model: VAE
    representation: Representation
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


def resolve_device(name: str) -> torch.device:
    """The torch device for --device (``auto``: CUDA when PyTorch sees a GPU, else CPU); a UserError
    for CUDA without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' asked for, but this PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def validation_split(cfg: Config, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (sorted) of the training and the validation part of ``n`` training examples: a seeded
    ``val_fraction`` of them is held out, the same one in training and in evaluation."""
    n_val = int(round(cfg.data.val_fraction * n))
    order = np.random.default_rng(cfg.train.seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def load_train_data(cfg: Config) -> TrainData:
    """Load the configured training split(s) and hold out ``val_fraction`` of them (seeded)."""
    images, labels = joined_split(cfg.data, cfg.data.train_split)
    n = cfg.data.limit or len(images)
    train_idx, val_idx = validation_split(cfg, n) if cfg.data.val_fraction else (np.arange(n), None)
    data = TrainData(images[train_idx] if val_idx is not None else images[:n],
                     None if val_idx is None else images[val_idx])
    if cfg.train.labels:
        if labels is None:
            raise UserError(f"{cfg.data.dataset} has no labels (no class folders or labels array); "
                            "M2 needs them: train another preset")
        data.labels = labels[train_idx]
        data.labelled = choose_labelled(data.labels, cfg.train.labels, classes=cfg.model.classes, seed=cfg.train.seed)
    return data


def build_model(cfg: Config, representation: Representation, init_data: torch.Tensor | None = None) -> VAE:
    """A fresh VAE; with ``init_data`` (stored rows of the training set), its output starts at their
    mean and per-dimension variance (see :meth:`VAE.init_from_data`)."""
    model = build_vae(cfg.model, data_dim=representation.data_dim, image_shape=representation.image_shape)
    if init_data is not None:
        model.init_from_data(training_input(cfg.model, representation, init_data[:INIT_EXAMPLES].cpu()),
                             representation.unit_variance())
    return model


INIT_EXAMPLES = 10_000
"""Training examples whose statistics start the decoder's output (enough for a variance to 1-2%)."""


def make_optimizer(cfg: Config, model: VAE) -> torch.optim.Optimizer:
    """Adam, its update fused into one kernel per step (CPU and CUDA; 2% of a `blog-2017` step here)."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr, fused=True)


def _binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.bernoulli(x, generator=generator)


class _NonFinite(Exception):
    """The loss or the weights became NaN/Inf during an epoch."""


@dataclass
class EpochPosition:
    """Where an unfinished epoch stands: what a mid-epoch checkpoint needs to continue it exactly."""

    step: int
    """Optimizer steps (batches) done in this epoch."""
    totals: torch.Tensor
    """(3,) float64 sums of the loss, rec and kl over the examples seen so far."""
    order_rng: torch.Tensor
    """State of the batch-order generator before this epoch's permutation (which it redraws)."""

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "totals": self.totals.cpu(), "order_rng": self.order_rng}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any] | None) -> EpochPosition | None:
        return None if state is None else cls(int(state["step"]), state["totals"], state["order_rng"])


BatchLoss = Callable[[torch.Tensor, torch.Tensor, int, dict[str, Any]], tuple[torch.Tensor, torch.Tensor]]
"""(stored rows, beta, batch size, model keywords) -> (loss, (3,) sums of loss, rec and kl over the batch)."""


def batch_loss(cfg: Config, net: nn.Module, rep: Representation, labels: Labels | None = None) -> BatchLoss:
    """What one training step differentiates, from a batch's stored rows (with M2's labelled rows
    after them) to its loss, and the batch's sums of loss, rec and kl for the epoch's means: the
    part of a step that ``--compile`` compiles (:mod:`svhn_vae.compilation`). ``beta`` is a tensor,
    so that a compiled step serves every epoch of a KL warm-up."""
    def loss_of(stored: torch.Tensor, beta: torch.Tensor, batch: int,
                extra: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(cfg.train.precision, stored.device):
            terms = net(training_input(cfg.model, rep, stored), iw_samples=cfg.train.iw_samples, **extra)
        if labels is None:
            loss = loss_from_terms(terms, beta=beta, free_bits=cfg.train.free_bits)
        else:
            loss, terms = labels.loss(terms, batch=batch, beta=beta)
        return loss, torch.stack([loss.detach() * batch, terms.rec.detach().sum(), terms.kl.detach().sum()])
    return loss_of


def _run_epoch(cfg: Config, model: nn.Module, loss_of: BatchLoss, opt: torch.optim.Optimizer, data: torch.Tensor,
               *, beta: float, generator: torch.Generator, bar: tqdm, scheduler: LRScheduler | None = None,
               position: EpochPosition | None = None, pause: Callable[[], bool] = lambda: False,
               world: World = World(), labels: Labels | None = None) -> dict[str, float] | EpochPosition:
    """One pass over the shuffled training set, each step descending ``loss_of`` (:func:`batch_loss`)
    of the model's parameters; returns mean loss terms per example (nats).

    ``position`` continues an unfinished epoch (the same batch order, the sums so far). When
    ``pause()`` turns True after a step, the epoch stops there and returns its position instead.
    With several processes (``world``) each takes its share of every batch and the sums are added
    up over all of them (a position holds the global sums, which rank 0 carries on). With ``labels``
    (M2) every step also sees labelled examples drawn from them.
    """
    model.train()
    beta_t = torch.tensor(beta, dtype=torch.float32, device=data.device)
    n, bs = len(data), cfg.train.batch_size
    if position is not None:
        generator.set_state(position.order_rng)
    order_rng = generator.get_state()
    order = torch.randperm(n, generator=generator).to(data.device)
    draws = labels.epoch_draws(math.ceil(n / bs), generator) if labels is not None else None
    first = position.step if position is not None else 0
    totals = torch.zeros(3, dtype=torch.float64, device=data.device)  # loss, rec, kl sums
    seen = 0  # examples in those sums
    if position is not None and world.is_main:
        totals += position.totals.to(data.device)
        seen = first * bs
    bar.update(min(n, first * bs))
    for step, start in enumerate(range(first * bs, n, bs), start=first):
        idx = world.shard(order[start:start + bs])
        rows, extra = (idx, {}) if labels is None else labels.batch(idx, draws[step])
        loss, sums = loss_of(data.index_select(0, rows), beta_t, len(idx), extra)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        if scheduler is not None:
            scheduler.step()
        totals += sums
        seen += len(idx)
        if step % 20 == 0 or start + bs >= n:  # an occasional host sync catches NaNs early enough
            if not torch.isfinite(world.sum(totals)).all():
                raise _NonFinite
            loss_, rec_, kl_ = (totals / seen).tolist()
            bar.set_postfix(loss=f"{loss_:.2f}", rec=f"{rec_:.2f}", kl=f"{kl_:.2f}", refresh=False)
        bar.update(len(idx))
        if start + bs < n and pause():
            totals = world.sum(totals)
            if not torch.isfinite(totals).all():
                raise _NonFinite
            return EpochPosition(step + 1, totals.detach().clone(), order_rng)
    loss, rec, kl = (world.sum(totals) / n).tolist()
    return {"loss": loss, "rec": rec, "kl": kl}


@torch.no_grad()
def evaluate_loss(model: VAE, rep: Representation, data: torch.Tensor, *, batch_size: int = 2048,
                  seed: int = 0) -> dict[str, float]:
    """Mean negative ELBO, reconstruction and KL per example (nats), in eval mode, with seeded noise
    (the posterior samples and, for dequantized inputs, the dequantization)."""
    model.eval()
    gen = torch.Generator(device=data.device).manual_seed(seed)
    rec = kl = 0.0
    for start in range(0, len(data), batch_size):
        terms = model(rep.to_input(data[start:start + batch_size], noise=True, generator=gen), generator=gen)
        rec, kl = rec + terms.rec.sum().item(), kl + terms.kl.sum().item()
    n = len(data)
    return {"loss": (kl - rec) / n, "rec": rec / n, "kl": kl / n}


def _snapshot(model: VAE, opt: torch.optim.Optimizer, scheduler: LRScheduler) -> tuple[dict, dict, dict]:
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()), copy.deepcopy(scheduler.state_dict())


def _checkpoint_state(cfg: Config, model: VAE, opt: torch.optim.Optimizer, scheduler: LRScheduler,
                      rep: Representation, epoch: int, state: dict[str, Any], gen: torch.Generator,
                      position: EpochPosition | None = None) -> dict[str, Any]:
    """Everything a resume needs: ``epoch`` whole epochs done, and ``position`` in the next one."""
    rng = {"torch": torch.get_rng_state(), "batches": gen.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"config": cfg.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": epoch, "representation": rep.state_dict(),
            "position": None if position is None else position.state_dict(),
            "train_state": {**state, "rng": rng}}


def _open_run_dir(cfg: Config, run_dir: Path, world: World, *, resume: bool, overwrite: bool) -> bool:
    """Create or reopen the run folder (rank 0; the other ranks wait for it); True when resuming
    from a checkpoint."""
    if world.is_main:
        with disk_errors(f"the run folder {run_dir}"):
            resuming = ckpt.prepare_run_dir(run_dir, cfg, resume=resume, overwrite=overwrite)
    world.barrier()
    return resuming if world.is_main else resume and ckpt.checkpoint_path(run_dir).exists()


def _save(path: Path, full: dict[str, Any]) -> None:
    """Write a checkpoint; a full disk or a read-only folder is a one-line error, the old file intact."""
    with disk_errors(f"checkpoint {path.name}"):
        ckpt.save_checkpoint(path, full)


def _stop_if_asked(stop: StopRequest, run_dir: Path, where: str) -> None:
    """After a checkpoint: end the run with a one-line message if a signal asked for it."""
    if stop.requested:
        raise TrainingStopped(f"stopped by {stop.signal_name} at {where}, after writing "
                              f"{ckpt.checkpoint_path(run_dir)}; continue with --resume")


def _restore_rng(rng: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(rng["torch"])
    gen.set_state(rng["batches"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _prepare_data(cfg: Config, data: TrainData, rep: Representation, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    train_x = rep.prepare(data.images, device=device)
    if data.val_images is None:
        return train_x, None
    val_x = rep.prepare(data.val_images, device=device)
    if cfg.model.likelihood == "bernoulli" and cfg.model.binarize:  # one fixed binarization for validation
        gen = torch.Generator(device=device).manual_seed(cfg.train.seed + 1)
        val_x = (_binarize(val_x.float() / 255, gen) * 255).to(val_x.dtype)
    return train_x, val_x


def _watched(cfg: Config, record: dict[str, Any]) -> float:
    return record["val_loss"] if cfg.train.early_stopping == "val" else record["loss"]


def _write_samples(cfg: Config, model: VAE, rep: Representation, run_dir: Path, epoch: int) -> np.ndarray:
    """Write an 8x8 grid of samples into the run folder; returns it, uint8 (H, W, C)."""
    from svhn_vae.figures import sample_grid, save_png

    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(cfg.train.seed)
    grid = sample_grid(model, rep, n=64, generator=gen)
    save_png(grid, run_dir / "samples" / f"epoch_{epoch:04d}.png")
    return grid


@holding_run_lock
def train(cfg: Config, *, run_dir: str | Path | None = None, data: TrainData | None = None,
          resume: bool = False, overwrite: bool = False, progress: bool = False,
          tensorboard: bool = False) -> TrainResult:
    """Train a VAE as configured; with ``run_dir``, write config, metrics and checkpoints there.

    ``resume`` continues from ``run_dir``'s last checkpoint exactly (weights, optimizer, epoch,
    early-stopping counters and random state). ``tensorboard`` also logs every epoch to
    ``run_dir/tensorboard`` (:mod:`svhn_vae.tracking`). The run folder is locked meanwhile
    (:mod:`svhn_vae.runlock`): a second writer is refused. Returns the model in its best state when
    early stopping is on, else its last.
    """
    # --- setup ----------------------------------------------------------------------------------
    if cfg.model.likelihood == AUTO_LIKELIHOOD:  # chosen for these images before the run stores it
        cfg = for_images(cfg, data.images.shape[-1] if data is not None else image_shape(cfg.data)[-1])
    tc = cfg.train
    torch.manual_seed(tc.seed)
    world, device = distributed.setup(resolve_device(tc.device))  # several processes under torchrun
    run_dir = Path(run_dir) if run_dir is not None else None
    writes = run_dir is not None and world.is_main  # only rank 0 writes into the run folder
    if run_dir is not None:
        ckpt.check_run_dir(run_dir, cfg, resume=resume, overwrite=overwrite)  # refuse before any slow work
    elif tensorboard:
        raise UserError("TensorBoard logging writes into the run folder: give a run_dir")

    # --- data and representation (PCA fitted on the training images only) -----------------------
    data = data if data is not None else load_train_data(cfg)  # before the run folder: no empty runs
    resuming = run_dir is not None and _open_run_dir(cfg, run_dir, world, resume=resume, overwrite=overwrite)
    start = ckpt.load_checkpoint(ckpt.checkpoint_path(run_dir)) if resuming else None
    if start is not None:
        rep = Representation.from_state_dict(start["representation"])
    else:
        rep = Representation.fit(cfg, [data.images])
    train_x, val_x = _prepare_data(cfg, data, rep, device)
    if cfg.model.classes and data.labelled is None:
        raise UserError("the M2 model trains on labels: give TrainData its labels and labelled indices")
    labels = None if data.labelled is None else Labels(data.labels, data.labelled, alpha=tc.alpha,
                                                       labelled_batch=tc.labelled_batch,
                                                       labelled_weight=tc.labelled_weight,
                                                       consistency=tc.consistency, device=device)
    if tc.early_stopping == "val" and val_x is None:
        raise UserError("early stopping on 'val' needs a validation split: set --val-fraction (e.g. 0.05)")

    # --- model, optimizer and learning-rate schedule ----------------------------------------------
    model = build_model(cfg, rep, init_data=None if start is not None else train_x).to(device)
    steps_per_epoch = math.ceil(len(train_x) / tc.batch_size)
    loss_of = batch_loss(cfg, distributed.wrap(model, world, sync_batchnorm=tc.sync_batchnorm), rep, labels)
    if compilation.wanted(tc.compile, steps=tc.epochs * steps_per_epoch):
        loss_of = compilation.Compiled(loss_of, fall_back=tc.compile == "auto")
    opt = make_optimizer(cfg, model)
    scheduler = make_scheduler(tc, opt, steps_per_epoch=steps_per_epoch)
    gen = torch.Generator().manual_seed(tc.seed)
    state: dict[str, Any] = {"best": math.inf, "bad_epochs": 0, "nan_recoveries": 0}
    history: list[dict[str, Any]] = []
    first_epoch = 1
    if start is not None:
        model.load_state_dict(start["model"])
        opt.load_state_dict(start["optimizer"])
        scheduler.load_state_dict(start["scheduler"])
        state = {k: v for k, v in start["train_state"].items() if k != "rng"}
        _restore_rng(start["train_state"]["rng"], gen)
        first_epoch = start["epoch"] + 1
        if writes:
            ckpt.truncate_metrics(run_dir, last_epoch=start["epoch"])
        world.barrier()
        history = ckpt.read_metrics(run_dir)
        log.info("resuming %s from epoch %d", run_dir, start["epoch"])
    if world.active:  # the same initial weights everywhere (DDP copies rank 0's), other noise per rank
        torch.manual_seed(tc.seed + 1_000_003 * world.rank + 7_919 * first_epoch)
    log.info("model: %d trainable parameters on %s", sum(p.numel() for p in model.parameters() if p.requires_grad), device)
    tb = TensorBoardLog(run_dir) if tensorboard and writes else None

    # --- loop ---------------------------------------------------------------------------------------
    stopped_early = state["bad_epochs"] >= tc.patience and tc.early_stopping != "none"
    epoch = first_epoch
    position = EpochPosition.from_state_dict(start.get("position")) if start is not None else None
    clock = CheckpointClock(every_steps=tc.checkpoint_every_steps, every_minutes=tc.checkpoint_every_minutes)
    seconds = 0.0  # training time of the epoch in progress (its steps only)
    with StopRequest() as stop:
        # Inside an epoch, pause for a checkpoint when one is due or a signal asked to stop.
        pause = (lambda: world.any(clock.due() or stop.requested, device)) if run_dir is not None else (lambda: False)
        while epoch <= tc.epochs and not stopped_early:
            beta = min(1.0, epoch / tc.kl_warmup_epochs) if tc.kl_warmup_epochs > 0 else 1.0
            good = _snapshot(model, opt, scheduler)
            t0 = time.perf_counter()
            with tqdm(total=len(train_x), desc=f"epoch {epoch}/{tc.epochs}", unit="img", disable=not progress,
                      leave=False) as bar:
                try:
                    result = _run_epoch(cfg, model, loss_of, opt, train_x, beta=beta, generator=gen, bar=bar,
                                        scheduler=scheduler, position=position, pause=pause, world=world,
                                        labels=labels)
                except _NonFinite:
                    _recover_from_nan(cfg, model, opt, scheduler, good, state, epoch, run_dir)
                    continue
            seconds += time.perf_counter() - t0
            world.copy_buffers_from_main(model)
            if isinstance(result, EpochPosition):  # a checkpoint inside the epoch, then on (or stop)
                position = result
                if writes:
                    full = _checkpoint_state(cfg, model, opt, scheduler, rep, epoch - 1, state, gen, position)
                    _save(ckpt.checkpoint_path(run_dir, "last"), full)
                clock.reset()
                _stop_if_asked(stop, run_dir, f"epoch {epoch}, step {position.step}")
                continue
            position = None
            record = {"epoch": epoch, **result, "beta": beta, "lr": opt.param_groups[0]["lr"], "seconds": seconds,
                      "images_per_s": len(train_x) / seconds}
            seconds = 0.0
            if val_x is not None:
                record.update({f"val_{k}": v for k, v in evaluate_loss(model, rep, val_x, seed=tc.seed).items()})

            # --- early stopping, log, checkpoint --------------------------------------------------
            # Without early stopping the run's result is its last epoch, so best.pt follows it.
            improved = tc.early_stopping == "none" or _watched(cfg, record) < state["best"] - tc.min_delta
            if improved:
                state.update(best=_watched(cfg, record), bad_epochs=0)
            else:
                state["bad_epochs"] += 1
            stopped_early = tc.early_stopping != "none" and state["bad_epochs"] >= tc.patience
            record["best"] = state["best"]
            history.append(record)
            log.info("epoch %d: loss %.3f (rec %.3f, kl %.3f), %.0f img/s", epoch, record["loss"], record["rec"],
                     record["kl"], record["images_per_s"])
            check_finite(record, "metrics.jsonl")
            if writes:
                with disk_errors("metrics.jsonl"):
                    ckpt.append_metrics(run_dir, record)
                if tb is not None:
                    tb.epoch(record)
                full = _checkpoint_state(cfg, model, opt, scheduler, rep, epoch, state, gen)
                if improved:
                    _save(ckpt.checkpoint_path(run_dir, "best"), full)
                _save(ckpt.checkpoint_path(run_dir, "last"), full)
                if tc.sample_every and epoch % tc.sample_every == 0:
                    grid = _write_samples(cfg, model, rep, run_dir, epoch)
                    if tb is not None:
                        tb.image("samples", grid, step=epoch)
            if run_dir is not None:
                clock.reset()
                _stop_if_asked(stop, run_dir, f"the end of epoch {epoch}")
            epoch += 1

    if tb is not None:
        tb.close()
    if world.active:
        distributed.shutdown()
    if run_dir is not None and tc.early_stopping != "none" and ckpt.checkpoint_path(run_dir, "best").exists():
        model.load_state_dict(ckpt.load_checkpoint(ckpt.checkpoint_path(run_dir, "best"))["model"])
    model.eval()
    return TrainResult(model, rep, history, stopped_early)


def _recover_from_nan(cfg: Config, model: VAE, opt: torch.optim.Optimizer, scheduler: LRScheduler,
                      good: tuple[dict, dict, dict], state: dict[str, Any], epoch: int, run_dir: Path | None) -> None:
    """Restore the state of the epoch's start and lower the learning rate, or stop with an error."""
    model.load_state_dict(good[0])
    opt.load_state_dict(good[1])
    scheduler.load_state_dict(good[2])
    if state["nan_recoveries"] >= cfg.train.nan_retries:
        where = f"; the last good checkpoint is {ckpt.checkpoint_path(run_dir)}" if run_dir else ""
        raise TrainingDiverged(
            f"loss became NaN/Inf in epoch {epoch} after {state['nan_recoveries']} recoveries{where}; "
            "try a lower --lr, --grad-clip 10, or a larger --eps"
        )
    state["nan_recoveries"] += 1
    scale_base_lrs(scheduler, cfg.train.nan_lr_factor)
    log.warning("loss became NaN/Inf in epoch %d: restored the epoch's start, learning rate now %.3g",
                epoch, opt.param_groups[0]["lr"])
