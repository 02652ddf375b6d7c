"""Figure commands of ``svhn-vae``: sample, analogies, reconstruct, interpolate, curves and report.

Each figure is one :class:`FigureCommand`: its options, its default file in ``RUN/figures/`` and a
``make`` function calling the library (:mod:`svhn_vae.figures`); this module only loads the run
and the test split, and saves what comes back. ``report`` makes every figure that is missing,
with each command's default options, and writes one self-contained HTML file.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svhn_vae import figures
from svhn_vae.atomic import atomic_write, disk_errors
from svhn_vae.checkpoint import CONFIG_FILE, TrainedModel, load_trained, read_metrics
from svhn_vae.classification import can_classify
from svhn_vae.config import AUTO_DECODE
from svhn_vae.errors import UserError
from svhn_vae.report import ReportFigure, config_docs, latest_training_samples, read_eval, render_report
from svhn_vae.runlock import lock_if_run_folder

log = logging.getLogger(__name__)

FIGURES_DIR = "figures"
REPORT_FILE = "report.html"
# A made figure: the image, and rows of numbers shown with it (saved beside the PNG as JSON).
Made = tuple[np.ndarray, list[dict[str, Any]]]


# --- the run and its test images, loaded once per command ----------------------------------------


def run_folder(path: Path) -> Path | None:
    """The run folder of RUN: the folder itself, or the run holding a checkpoint file (else None)."""
    candidate = path if path.is_dir() else path.parent.parent  # RUN or RUN/checkpoints/best.pt
    return candidate if (candidate / CONFIG_FILE).exists() else None


def default_out(run: Path, filename: str) -> Path:
    """RUN/figures/FILENAME (beside the checkpoint file when it is not inside a run folder)."""
    return (run_folder(run) or run.parent) / FIGURES_DIR / filename


@dataclass
class FigureContext:
    """What the figure commands share: the run, the seed, and lazily loaded model and test split."""

    run: Path
    which: str = "best"
    device: str = "cpu"
    seed: int = 0
    data_dir: Path | None = None
    _trained: TrainedModel | None = field(default=None, repr=False)
    _split: Any = field(default=None, repr=False)

    @property
    def trained(self) -> TrainedModel:
        if self._trained is None:
            from svhn_vae.train import resolve_device

            self._trained = load_trained(self.run, which=self.which, device=resolve_device(self.device))
        return self._trained

    def test_split(self) -> Any:
        """The run's test split (config.data.test_split), from --data-dir or the run's data folder."""
        if self._split is None:
            from svhn_vae.data.loading import load_configured

            data = self.trained.config.data
            self._split = load_configured(data, data.test_split, data_dir=self.data_dir)
        return self._split

    def generator(self) -> torch.Generator:
        """A fresh generator seeded with --seed on the model's device: each figure starts from the seed."""
        device = next(self.trained.model.parameters()).device
        return torch.Generator(device=device).manual_seed(self.seed)

    def run_dir(self) -> Path:
        folder = run_folder(self.run)
        if folder is None:
            raise UserError(f"{self.run} is not a run folder (no {CONFIG_FILE}); pass the folder given to --run-dir")
        return folder


# --- the figures ---------------------------------------------------------------------------------


def _make_samples(ctx: FigureContext, opts: argparse.Namespace) -> Made:
    t = ctx.trained
    return figures.sample_grid(t.model, t.representation, n=opts.n, temperature=opts.temperature, mode=opts.mode,
                               generator=ctx.generator(), scale=opts.scale), []


def _make_analogies(ctx: FigureContext, opts: argparse.Namespace) -> Made:
    t, split = ctx.trained, ctx.test_split()
    return figures.analogy_grid(t.model, t.representation, split.images, split.labels, n_samples=opts.samples,
                                pool=opts.pool, reconstruction=opts.reconstruction, generator=ctx.generator(),
                                scale=opts.scale), []


def _make_reconstructions(ctx: FigureContext, opts: argparse.Namespace) -> Made:
    t = ctx.trained
    rec = figures.reconstruction_grid(t.model, t.representation, ctx.test_split().images, n=opts.n,
                                      generator=ctx.generator(), scale=opts.scale)
    rows = [{"column": col, "test index": int(i), **{f"mse {k}": float(v[col]) for k, v in rec.errors.items()}}
            for col, i in enumerate(rec.indices)]
    return rec.image, rows


def _make_interpolations(ctx: FigureContext, opts: argparse.Namespace) -> Made:
    t = ctx.trained
    return figures.interpolation_grid(t.model, t.representation, ctx.test_split().images, pairs=opts.pairs,
                                      steps=opts.steps, method=opts.method, generator=ctx.generator(),
                                      scale=opts.scale), []


def _make_curves(ctx: FigureContext, opts: argparse.Namespace) -> Made:
    records = read_metrics(ctx.run_dir())
    if not records:
        raise UserError(f"no metrics in {ctx.run_dir()}; train first with 'svhn-vae train --run-dir'")
    return figures.loss_curves(records, dpi=opts.dpi), []


def _make_style_grid(ctx: FigureContext, opts: argparse.Namespace) -> Made:
    t, split = ctx.trained, ctx.test_split()
    gen = ctx.generator()
    picked = figures.choose(opts.test_rows, len(split.images), generator=gen)
    image = figures.style_content_grid(t.model, t.representation, split.images[picked], prior_rows=opts.prior_rows,
                                       generator=gen, scale=opts.scale)
    rows = [{"row": r, "style": "prior" if r < opts.prior_rows else f"test image {int(picked[r - opts.prior_rows])}"}
            for r in range(opts.prior_rows + len(picked))]
    return image, rows


def _make_confusion(ctx: FigureContext, opts: argparse.Namespace) -> Made:
    from svhn_vae.classification import classification_metrics

    t, split = ctx.trained, ctx.test_split()
    found = classification_metrics(t, split.images, split.labels, device=ctx.device)
    title = f"q(y|x), {found['labels_used']} labels: test error {100 * found['error']:.2f}%"
    rows = [{"true class": c, "error": e, "examples": sum(found["confusion"][c])}
            for c, e in enumerate(found["per_class_error"])]
    return figures.confusion_figure(found["confusion"], title=title), rows


def _count(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def _sample_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=_count, default=100, help="number of samples (ceil(sqrt(n)) per row)")
    p.add_argument("--temperature", type=float, default=1.0, help="z ~ N(0, T^2 I)")
    p.add_argument("--mode", choices=figures.MODES, default=AUTO_DECODE,
                   help="show the mean of p(x|z), its most probable values, or a sample; auto: the mode for the "
                        "discrete likelihoods, the mean for the others")


def _analogy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=_count, default=9, help="posterior samples per row")
    p.add_argument("--pool", type=int, default=0, help="draw this many and keep the most diverse --samples (0: off)")
    p.add_argument("--reconstruction", action="store_true", help="show the plain reconstruction after the original")


def _reconstruct_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=_count, default=10, help="number of test images")


def _interpolate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", type=_count, default=5, help="number of rows (pairs of test images)")
    p.add_argument("--steps", type=_count, default=8, help="interpolation points per row, ends included")
    p.add_argument("--method", choices=figures.METHODS, default="slerp", help="spherical or linear")


def _style_grid_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prior-rows", type=int, default=5, help="rows whose style z is drawn from the prior")
    p.add_argument("--test-rows", type=int, default=5, help="rows whose style is a test image's posterior mean")


def _no_options(p: argparse.ArgumentParser) -> None:
    pass


def _curves_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dpi", type=_count, default=100, help="pixels per inch of the 12 x 3.6 inch figure")


@dataclass(frozen=True)
class FigureCommand:
    """One figure sub-command and its place in the report."""

    name: str
    filename: str
    title: str
    caption: str
    add_options: Callable[[argparse.ArgumentParser], None]
    make: Callable[[FigureContext, argparse.Namespace], Made]
    uses_model: bool = True
    """Loads the model (and takes --seed, --which, --device, --scale)."""
    uses_data: bool = False
    """Needs the test split (takes --data-dir)."""
    label_latent: bool = False
    """Only for models with a label latent (M2); the report leaves it out for the others."""


COMMANDS = (
    FigureCommand("curves", "curves.png", "Loss curves",
                  "Training (solid) and validation (dashed) terms per epoch, in nats per example.",
                  _curves_options, _make_curves, uses_model=False),
    FigureCommand("sample", "samples.png", "Samples",
                  "Decodes of prior draws of z, N(0, T^2 I) or with a learned prior scale N(0, T^2 diag(s^2)) (a "
                  "hierarchical model's lower layers drawn from their priors), each shown as the mode of p(x|z) "
                  "for the discrete likelihoods (each pixel's most probable value; where pixels depend on the "
                  "ones before them, given those decoded before it in raster order) and as its mean for the "
                  "others (--mode auto; --mode mean, mode or sample choose), mapped back to pixels (through "
                  "the inverse PCA for PCA models) and clipped to [0, 1]. Every figure decodes z this way.",
                  _sample_options, _make_samples),
    FigureCommand("analogies", "analogies.png", "Posterior samples per digit",
                  "Row d: a test image of digit d, then decodes of samples from its posterior q(z|x).",
                  _analogy_options, _make_analogies, uses_data=True),
    FigureCommand("reconstruct", "reconstructions.png", "Reconstructions",
                  "Top: test images; then (PCA models) the PCA-only reconstruction; bottom: the VAE's "
                  "reconstruction from the posterior mean. Errors: mean squared error per pixel in [0, 1].",
                  _reconstruct_options, _make_reconstructions, uses_data=True),
    FigureCommand("interpolate", "interpolations.png", "Latent interpolations",
                  "Each row: test image A, decodes along a path between the posterior means of A and B, image B.",
                  _interpolate_options, _make_interpolations, uses_data=True),
    FigureCommand("style-grid", "style_grid.png", "Style and content",
                  "Models with a label latent (M2): each row one style z, from the prior (top rows) or the "
                  "posterior mean of a test image (the rows below), decoded with the labels y = 0..9 across "
                  "(Kingma et al. 2014, figure 1).",
                  _style_grid_options, _make_style_grid, uses_data=True, label_latent=True),
    FigureCommand("confusion", "confusion.png", "Confusion matrix",
                  "Models with a label latent (M2): test images by true class (rows) and the classifier "
                  "q(y|x)'s most probable class (columns); shading: the fraction of the row.",
                  _no_options, _make_confusion, uses_data=True, label_latent=True),
)


# --- saving and the commands ---------------------------------------------------------------------


def save_figure(made: Made, out: Path) -> None:
    """Write the PNG, and its rows of numbers (if any) as JSON beside it (same name, .json)."""
    image, rows = made
    figures.save_png(image, out)
    if rows:
        with atomic_write(out.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(rows, indent=2) + "\n")


def _context(args: argparse.Namespace) -> FigureContext:
    return FigureContext(args.run, which=getattr(args, "which", "best"), device=getattr(args, "device", "cpu"),
                         seed=getattr(args, "seed", 0), data_dir=getattr(args, "data_dir", None))


def cmd_figure(args: argparse.Namespace) -> None:
    """One figure command (sample, analogies, ...): make it, save the PNG and print its path and size as JSON."""
    command = args.figure_command
    out = args.out or default_out(args.run, command.filename)
    made = command.make(_context(args), args)
    save_figure(made, out)
    height, width = made[0].shape[:2]
    print(json.dumps({"figure": command.name, "out": str(out), "width": width, "height": height}))


def _default_options(command: FigureCommand) -> argparse.Namespace:
    """The command's options as its sub-command would parse them with no flags given."""
    parser = argparse.ArgumentParser(add_help=False)
    _add_common(parser, command)
    command.add_options(parser)
    return parser.parse_args(["RUN"])


def _report_figure(command: FigureCommand, ctx: FigureContext, *, regenerate: bool) -> ReportFigure:
    """The command's figure from RUN/figures/, made first when missing (or ``regenerate``)."""
    path = ctx.run_dir() / FIGURES_DIR / command.filename
    if regenerate or not path.exists():
        try:
            save_figure(command.make(ctx, _default_options(command)), path)
        except UserError as e:
            log.warning("report: no %s figure: %s", command.name, e)
            return ReportFigure(command.title, command.caption, note=f"Not made: {e}")
    table_file = path.with_suffix(".json")
    table = json.loads(table_file.read_text()) if table_file.exists() else []
    return ReportFigure(command.title, command.caption, png=path.read_bytes(), table=table)


def _training_samples_figure(run_dir: Path) -> list[ReportFigure]:
    latest = latest_training_samples(run_dir)
    if latest is None:
        return []
    return [ReportFigure("Samples during training", f"{latest.name}: written by the training loop "
                         "(train.sample_every).", png=latest.read_bytes())]


def cmd_report(args: argparse.Namespace) -> None:
    """`svhn-vae report RUN`: write RUN/report.html, holding the run folder's lock."""
    with lock_if_run_folder(args.run):
        _report(args)


def _report(args: argparse.Namespace) -> None:
    ctx = _context(args)
    run_dir = ctx.run_dir()
    trained = ctx.trained
    labelled = can_classify(trained)
    report_figures = [_report_figure(COMMANDS[0], ctx, regenerate=args.regenerate),
                      *_training_samples_figure(run_dir),
                      *(_report_figure(c, ctx, regenerate=args.regenerate) for c in COMMANDS[1:]
                        if labelled or not c.label_latent)]
    config = trained.config
    summary = (f"Preset {config.preset}, dataset {config.data.dataset}, {args.which} checkpoint "
               f"(epoch {trained.epoch}); figures made with seed {args.seed}.")
    html = render_report(title=f"svhn-vae run {run_dir.resolve().name}", config=config.to_dict(),
                         figures=report_figures, records=read_metrics(run_dir), eval_metrics=read_eval(run_dir),
                         summary=summary, config_descriptions=config_docs())
    out = args.out or run_dir / REPORT_FILE
    with disk_errors(str(out)), atomic_write(out) as tmp:
        tmp.write_text(html, encoding="utf-8")
    print(json.dumps({"report": str(out), "figures": [f.title for f in report_figures if f.png is not None]}))


# --- parser --------------------------------------------------------------------------------------


def _add_common(p: argparse.ArgumentParser, command: FigureCommand | None) -> None:
    """RUN, --out, and the model/data flags the command uses (all of them for the report)."""
    p.add_argument("run", type=Path, metavar="RUN", help="run folder (or a checkpoint file)")
    default = f"RUN/{FIGURES_DIR}/{command.filename}" if command is not None else f"RUN/{REPORT_FILE}"
    p.add_argument("--out", type=Path, default=None, help=f"output file; None: {default}")
    if command is None or command.uses_model:
        p.add_argument("--seed", type=int, default=0, help="seed of every random choice of the figure")
        p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint of the run folder")
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    if command is not None and command.uses_model:
        p.add_argument("--scale", type=_count, default=2, help="upscaling factor of every image (nearest neighbour)")
    if command is None or command.uses_data:
        p.add_argument("--data-dir", type=Path, default=None,
                       help="folder with the test split; None: the run's data.data_dir")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register the figure sub-commands and ``report`` on the ``svhn-vae`` parser."""
    for command in COMMANDS:
        p = subparsers.add_parser(command.name, help=f"{command.title.lower()} as a PNG (RUN/{FIGURES_DIR}/"
                                  f"{command.filename})", description=command.caption,
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        _add_common(p, command)
        command.add_options(p)
        p.set_defaults(func=cmd_figure, figure_command=command)
    p = subparsers.add_parser("report", help=f"one self-contained HTML file with every figure (RUN/{REPORT_FILE})",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_common(p, None)
    p.add_argument("--regenerate", action="store_true",
                   help=f"make every figure again, even those already in RUN/{FIGURES_DIR}")
    p.set_defaults(func=cmd_report)
