"""``svhn-vae evaluate`` and ``svhn-vae compare``: a thin command line over :mod:`svhn_vae.evaluate`.

``evaluate RUN`` scores a run's checkpoint on a held-out split and writes ``RUN/eval.json``
(atomically); ``compare RUN1 RUN2 ...`` prints one aligned table of the runs' metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svhn_vae.compilation import AUTO_MIN_WEIGHT_CALLS, add_compile_flags
from svhn_vae.config import AUTO_DECODE, DECODES, Config
from svhn_vae.errors import UserError

log = logging.getLogger(__name__)

EVAL_FILE = "eval.json"
VAL_SPLIT = "val"
"""``--split val``: the run's held-out part of its training split, for tuning without touching test."""

# (column header, dotted path into {"config", "metrics", "eval"}, format of a number)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("preset", "config.preset", "{}"),
    ("epochs", "metrics.epoch", "{}"),
    ("train loss", "metrics.loss", "{:.2f}"),
    ("n", "eval.n", "{}"),
    ("K", "eval.importance_samples", "{}"),
    ("ELBO nats", "eval.elbo_nats", "{:.2f}"),
    ("IWAE nats", "eval.iwae_nats", "{:.2f}"),
    ("bpd ELBO", "eval.bpd_elbo", "{:.4f}"),
    ("bpd IWAE", "eval.bpd_iwae", "{:.4f}"),
    ("bpd Gauss", "eval.baselines.gaussian_bpd", "{:.4f}"),
    ("bpd PPCA", "eval.baselines.ppca_bpd", "{:.4f}"),
    ("bpd hist.", "eval.baselines.histogram_bpd", "{:.4f}"),
    ("NLL indep.", "eval.baselines.independent_bernoulli_nats", "{:.2f}"),
    ("PCA rec", "eval.pca_space.rec", "{:.2f}"),
    ("PCA KL", "eval.pca_space.kl", "{:.2f}"),
    ("PSNR dB", "eval.reconstruction.psnr", "{:.2f}"),
    ("PCA PSNR", "eval.reconstruction.pca_only_psnr", "{:.2f}"),
)


# --- evaluate -------------------------------------------------------------------------------------

def load_images(cfg: Config, splits: str, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, H, W, C) and labels (N,) of one or several '+'-joined splits of the run's
    dataset, or of 'val', the part of the training split(s) the run held out (``val_fraction``)."""
    from svhn_vae.data.loading import joined_split

    if splits == VAL_SPLIT:
        if cfg.data.val_fraction == 0:
            raise UserError("--split val needs a run trained with --val-fraction > 0; it held nothing out")
        return _training_part(cfg, args, validation=True)
    return joined_split(cfg.data, splits, data_dir=args.data_dir, download=args.download)


def _training_part(cfg: Config, args: argparse.Namespace, *, validation: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of the run's training split(s) as in training (``data.limit`` applied):
    the part it trained on, or with ``validation`` the part it held out (``val_fraction``)."""
    from svhn_vae.train import validation_split

    images, labels = load_images(cfg, cfg.data.train_split, args)
    images, labels = (images[:cfg.data.limit], labels[:cfg.data.limit]) if cfg.data.limit else (images, labels)
    if cfg.data.val_fraction == 0:
        return images, labels
    idx = validation_split(cfg, len(images))[1 if validation else 0]
    return images[idx], labels[idx]


def _extras(args: argparse.Namespace, trained: Any, test: tuple[np.ndarray, np.ndarray],
            train: tuple[np.ndarray, np.ndarray], device: Any) -> dict[str, Any]:
    """The latent probe and the sample quality, each when asked for."""
    from svhn_vae.probe import latent_probe
    from svhn_vae.quality import sample_quality

    asked = [name for name, on in (("probe", args.probe), ("quality", args.quality)) if on]
    if asked and (reason := _why_no_labels(trained.config.data.dataset, train[1], test[1])):
        log.warning("%s skipped: %s", " and ".join(asked), reason)
        return {"skipped": {name: reason for name in asked}}
    common = {"train_images": train[0], "train_labels": train[1], "test_images": test[0], "test_labels": test[1],
              "seed": args.seed, "device": device, "progress": not args.no_progress}
    out: dict[str, Any] = {}
    if args.probe:
        out["probe"] = latent_probe(trained, draws=args.probe_draws, **common)
    if args.quality:
        out["quality"] = sample_quality(trained, dataset=trained.config.data.dataset, decode=args.quality_decode,
                                        n_samples=args.quality_samples, **common)
    return out


def _why_no_labels(dataset: str, train_labels: np.ndarray | None, test_labels: np.ndarray | None) -> str | None:
    """Why the probe and the sample quality (both learn from labels) cannot run, or None when they can."""
    if train_labels is None or test_labels is None:
        return f"{dataset} has no labels (no class folders or labels array)"
    if len(np.unique(train_labels)) < 2:
        from svhn_vae.probe import ONE_CLASS

        return ONE_CLASS
    return None


def _default_out(run: Path) -> Path:
    return run / EVAL_FILE if run.is_dir() else run.with_suffix(".eval.json")


def cmd_evaluate(args: argparse.Namespace) -> None:
    """`svhn-vae evaluate RUN`: score the run's checkpoint, holding the run folder's lock, and write eval.json."""
    from svhn_vae.runlock import lock_if_run_folder

    with lock_if_run_folder(args.run):
        _evaluate(args)


def _evaluate(args: argparse.Namespace) -> None:
    from svhn_vae.atomic import disk_errors, write_json
    from svhn_vae.checkpoint import load_trained
    from svhn_vae.classification import can_classify, classification_metrics
    from svhn_vae.evaluate import EvalOptions, check_finite, evaluate
    from svhn_vae.train import resolve_device

    options = EvalOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvalOptions)})
    device = resolve_device(args.device)
    trained = load_trained(args.run, which=args.which, device=device)
    cfg = trained.config
    test = load_images(cfg, args.split, args)
    classification = None
    if can_classify(trained):  # cheap: always on the whole split
        classification = {"split": args.split, **classification_metrics(
            trained, *test, dataset=cfg.data.dataset, device=device)}
    if options.max_examples:
        test = (test[0][:options.max_examples], test[1][:options.max_examples])
    need_train = options.baselines or args.probe or args.quality
    train = _training_part(cfg, args) if need_train else None
    result = {"run": str(args.run), "which": args.which, "preset": cfg.preset, "dataset": cfg.data.dataset,
              "device": str(device)}
    result.update(evaluate(trained, images=test[0], train_images=None if train is None else train[0],
                           options=options, device=device, progress=not args.no_progress))
    if classification is not None:
        result["classification"] = classification
    if train is not None:
        result.update(_extras(args, trained, test, train, device))
    check_finite(result)
    out = args.out if args.out is not None else _default_out(args.run)
    with disk_errors(str(out)):
        write_json(out, result)
    if args.tensorboard:
        _log_to_tensorboard(args.run, result)
    print(summary(result))
    print(f"wrote {out}")


def _log_to_tensorboard(run: Path, result: dict[str, Any]) -> None:
    """The evaluation's numbers as scalars at the checkpoint's epoch, beside the run's training curves."""
    from svhn_vae.tracking import TensorBoardLog

    if not run.is_dir():
        raise UserError(f"--tensorboard logs into a run folder; {run} is a checkpoint file")
    tb = TensorBoardLog(run)
    tb.metrics(result, step=int(result["epoch"]), prefix=f"eval_{result['split']}")
    tb.close()


def _fmt(value: Any, spec: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return spec.format(value)


def summary(result: dict[str, Any]) -> str:
    """A few human-readable lines of an ``eval.json`` dict."""
    unit = "bits/dim" + {"binarized": " (binary pixels)", "8-bit": " (8-bit values)"}.get(result.get("data"), "")
    lines = [f"{result.get('run', '?')} ({result.get('preset', '?')}, epoch {result.get('epoch', '?')}): "
             f"{result['n']} {result['split']} images, K={result['importance_samples']}, {result['seconds']:.0f} s",
             f"  ELBO {_fmt(result['elbo_nats'], '{:.2f}')} nats  {_fmt(result['bpd_elbo'], '{:.4f}')} {unit}",
             f"  IWAE {_fmt(result['iwae_nats'], '{:.2f}')} nats  {_fmt(result['bpd_iwae'], '{:.4f}')} {unit}"]
    if (base := result.get("baselines")) is not None and "independent_bernoulli_nats" in base:
        lines.append(f"  baseline: independent Bernoulli pixels {_fmt(base['independent_bernoulli_nats'], '{:.2f}')} nats; "
                     f"the VAE gains {_fmt(result['nats_gain_over_independent'], '{:.2f}')} nats")
    elif base is not None:
        lines.append(f"  baselines: Gaussian {_fmt(base['gaussian_bpd'], '{:.4f}')}, PPCA({base['ppca_components']}) "
                     f"{_fmt(base['ppca_bpd'], '{:.4f}')}, per-pixel histogram {_fmt(base.get('histogram_bpd'), '{:.4f}')} "
                     f"bits/dim; the VAE gains {_fmt(result.get('bpd_gain_over_best_baseline'), '{:+.4f}')} "
                     f"bits/dim over the best ({base.get('best', '?')})")
    if (pca := result.get("pca_space")) is not None:
        ref = pca["reference_blog_2017"]
        lines.append(f"  PCA space: rec {_fmt(pca['rec'], '{:.2f}')}, KL {_fmt(pca['kl'], '{:.2f}')} nats "
                     f"(write-up: rec {ref['rec']}, KL {ref['kl']})")
    rec = result["reconstruction"]
    lines.append(f"  reconstruction: MSE {_fmt(rec['mse'], '{:.5f}')}, PSNR {_fmt(rec['psnr'], '{:.2f}')} dB "
                 f"(PCA alone: {_fmt(rec['pca_only_psnr'], '{:.2f}')} dB)")
    lines.extend(classification_lines(result.get("classification")))
    lines.extend(_probe_lines(result.get("probe"), result.get("dataset", "")))
    lines.extend(_quality_lines(result.get("quality")))
    lines.extend(f"  {name} skipped: {reason}" for name, reason in result.get("skipped", {}).items())
    return "\n".join(lines)


def _percent(value: Any, std: Any = None) -> str:
    text = _fmt(None if value is None else 100 * value, "{:.1f}")
    return text + (f"±{100 * std:.1f}" if std else "") + "%"


def classification_lines(found: dict[str, Any] | None) -> list[str]:
    """The label latent's test error, with the published figures at the same label count."""
    if found is None:
        return []
    line = (f"  classifier q(y|x) with {found['labels_used']} labels: {found.get('split', 'test')} error "
            f"{_percent(found['error'])}")
    if published := found["published"].get(str(found["labels_used"])):
        line += " (published: " + ", ".join(f"{name} {_percent(e)}" for name, e in published.items()) + ")"
    return [line]


def _probe_lines(probe: dict[str, Any] | None, dataset: str) -> list[str]:
    """The latent probe's test errors per label count (k-NN / logistic regression), with the paper's."""
    if probe is None:
        return []
    cells = [f"{count} labels {_percent(r['knn_error'], r['knn_error_std'])} / "
             f"{_percent(r['logreg_error'], r['logreg_error_std'])}"
             for count, r in probe["results"].items() if "skipped" not in r]
    if not cells:
        return [f"  latent probe skipped: {next(iter(probe['results'].values()))['skipped']}"]
    lines = [f"  latent probe, test error k-NN / logistic: {'; '.join(cells)}"]
    if reference := probe.get("reference", {}).get(dataset):
        published = ", ".join(f"{name.replace('_', ' at ')} labels {_percent(error)}" for name, error in reference.items())
        lines.append(f"    Kingma et al. 2014 on {dataset}: {published}")
    return lines


def _quality_lines(quality: dict[str, Any] | None) -> list[str]:
    """The classifier-feature Fréchet distance against its floor, and the samples' label diversity."""
    if quality is None:
        return []
    return [f"  sample quality: classifier FID {_fmt(quality['fid_classifier'], '{:.2f}')} "
            f"(train vs test floor {_fmt(quality['fid_floor_train_vs_test'], '{:.2f}')}; this tool's own classifier, "
            "not comparable with Inception FIDs)",
            f"   {quality['classes_covered']} of {round(2 ** quality['label_entropy_max_bits'])} classes covered, label entropy "
            f"{_fmt(quality['label_entropy_bits'], '{:.2f}')} of {_fmt(quality['label_entropy_max_bits'], '{:.2f}')} bits",
            *_label_control_lines(quality.get("label_control"))]


def _label_control_lines(control: dict[str, Any] | None) -> list[str]:
    if not control:
        return []
    lines = [f"   style/content: the classifier reads {_percent(control['read_as_label'])} of {control['n_images']} "
             "images (prior styles x labels) as the label they were decoded with"]
    if control.get("test_styles"):
        test = control["test_styles"]
        lines.append(f"   and {_percent(test['read_as_label'])} of {test['n_images']} with test images' styles")
    return lines


# --- compare --------------------------------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON: ignored", path)
        return {}


def run_record(run_dir: Path) -> dict[str, Any]:
    """{"config": config.json, "metrics": last metrics.jsonl record, "eval": eval.json} of a run folder."""
    from svhn_vae.checkpoint import CONFIG_FILE, read_metrics

    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder; pass run folders written by 'svhn-vae train'")
    metrics = read_metrics(run_dir)
    return {"config": _read_json(run_dir / CONFIG_FILE), "metrics": metrics[-1] if metrics else {},
            "eval": _read_json(run_dir / EVAL_FILE)}


def lookup(record: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of nested dicts, or None where any part is missing."""
    for key in path.split("."):
        if not isinstance(record, dict) or record.get(key) is None:
            return None
        record = record[key]
    return record


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned: the first to the left, the others (numbers) to the right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def compare_table(run_dirs: Sequence[Path]) -> str:
    """The table ``svhn-vae compare`` prints: one row per run, "-" for missing values."""
    rows = []
    for run_dir in run_dirs:
        record = run_record(Path(run_dir))
        rows.append([str(run_dir), *(_fmt(lookup(record, path), spec) for _, path, spec in COLUMNS)])
    return format_table(["run", *(name for name, _, _ in COLUMNS)], rows)


def cmd_compare(args: argparse.Namespace) -> None:
    """`svhn-vae compare RUN ...`: print the runs' evaluations side by side (:func:`compare_table`)."""
    print(compare_table(args.runs))


# --- parser ---------------------------------------------------------------------------------------

def _add_evaluate_flags(p: argparse.ArgumentParser) -> None:
    from svhn_vae.evaluate import EvalOptions

    d = EvalOptions()
    p.add_argument("run", type=Path, help="run folder (or checkpoint file) to evaluate")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint of the run folder")
    p.add_argument("--split", default=d.split,
                   help="held-out split ('+' joins several), or 'val': the part of the training split the run held out")
    p.add_argument("--importance-samples", type=int, default=d.importance_samples, metavar="K",
                   help="importance samples K of the IWAE bound")
    p.add_argument("--max-examples", type=int, default=d.max_examples, metavar="N", help="first N images only (0: all)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per likelihood chunk")
    p.add_argument("--sample-chunk", type=int, default=d.sample_chunk, help="importance samples per chunk")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the dequantization and posterior noise")
    add_compile_flags(p, dest="compile", default=d.compile,
                      help="importance weights through torch.compile (compiles first: tens of seconds); auto: "
                           f"evaluations of {AUTO_MIN_WEIGHT_CALLS} chunks (--batch-size x --sample-chunk) and more; "
                           "--compile alone: on")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--data-dir", type=Path, default=None, help="dataset folder; None: the run's data_dir, else $SVHN_VAE_DATA or the user cache")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=False, help="download missing files")
    p.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=d.baselines,
                   help="fit and score the baselines: full Gaussian, PPCA and the per-pixel histogram")
    p.add_argument("--ppca-components", type=int, default=d.ppca_components,
                   help="PPCA baseline components (0: the run's PCA components, or its latent size)")
    p.add_argument("--probe", action=argparse.BooleanOptionalAction, default=True, help="latent probe")
    p.add_argument("--probe-draws", type=int, default=10, help="random label draws of the latent probe")
    p.add_argument("--quality", action=argparse.BooleanOptionalAction, default=True, help="sample quality (FID)")
    p.add_argument("--quality-samples", type=int, default=10000, help="samples for the sample quality")
    p.add_argument("--quality-decode", choices=DECODES, default=AUTO_DECODE,
                   help="show each generated image as p(x|z)'s mean or its mode; auto: the mode for the discrete "
                        "likelihoods, the mean for the others")
    p.add_argument("--out", type=Path, default=None, help=f"output file; None: RUN/{EVAL_FILE}")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--tensorboard", action="store_true", help="also log the metrics to RUN/tensorboard")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` and ``compare`` to the ``svhn-vae`` sub-commands."""
    p = sub.add_parser("evaluate", help="likelihood, bits/dim, baselines and reconstructions of a run",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_evaluate_flags(p)
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("compare", help="a table of the metrics of several runs")
    p.add_argument("runs", type=Path, nargs="+", help="run folders")
    p.set_defaults(func=cmd_compare)
