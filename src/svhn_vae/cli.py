"""``svhn-vae``: a thin command line over the library.

Every user mistake ends as one line on stderr and exit status 2; an interrupted run exits 130 and
can be resumed. Training flags are generated from the config dataclasses, so each setting of a
preset can be overridden flag by flag (``svhn-vae train --help`` lists them with their docs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from svhn_vae import cli_classify, cli_evaluate, cli_figures
from svhn_vae.allocator import keep_freed_memory
from svhn_vae.compilation import add_compile_flags
from svhn_vae.config import (DEFAULT_PRESET, PRESETS, SECTIONS, Config, field_docs, for_images, get_preset,
                             load_config_file)
from svhn_vae.errors import UserError

log = logging.getLogger("svhn_vae")


# --- config flags, generated from the dataclasses --------------------------------------------------


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 2048,2048, got '{text}'") from None


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int, "float": float, "str": str, "str | None": str, "tuple[int, ...]": _int_tuple,
}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field (``--latent-dim``, ``--no-whiten``, ...), default None = keep preset."""
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} settings (override the preset)")
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            flag, help_text = "--" + f.name.replace("_", "-"), docs.get(f.name, "")
            if f.type == "bool":
                group.add_argument(flag, dest=f"{section}.{f.name}", action=argparse.BooleanOptionalAction,
                                   default=None, help=help_text)
            elif (section, f.name) == ("train", "compile"):  # a mode, but --compile alone means on
                add_compile_flags(group, dest="train.compile", default=None, help=help_text)
            else:
                group.add_argument(flag, dest=f"{section}.{f.name}", type=_PARSERS[f.type], default=None,
                                   metavar=f.name.upper(), help=help_text)


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    """The preset (in its recipe for ``--likelihood``, or ``base``) with every flag the user gave applied on top."""
    config = base if base is not None else get_preset(args.preset or DEFAULT_PRESET,
                                                      likelihood=getattr(args, "model.likelihood", None))
    sections = {}
    for section in SECTIONS:  # every section changed first, then the whole config checked once
        changes = {k.split(".", 1)[1]: v for k, v in vars(args).items()
                   if k.startswith(section + ".") and v is not None}
        sections[section] = dataclasses.replace(getattr(config, section), **changes)
    return dataclasses.replace(config, **sections)


# --- commands ----------------------------------------------------------------------------------------


def cmd_presets(args: argparse.Namespace) -> None:
    """`svhn-vae presets`: each preset's dataset, input, likelihood and trainable parameter count."""
    from svhn_vae.data import get_dataset
    from svhn_vae.models import build_vae, count_parameters

    print(f"{'preset':<16} {'dataset':<14} {'input':<10} {'likelihood':<18} {'trainable params':>17}")
    for name in PRESETS:
        cfg = get_preset(name)
        shape = get_dataset(cfg.data.dataset).image_shape
        likelihood, cfg = cfg.model.likelihood, for_images(cfg, shape[2])  # 'auto' counted for its dataset
        pixels = shape[0] * shape[1] * shape[2]
        data_dim = cfg.pca.components if cfg.model.input == "pca" else pixels
        inp = f"pca{cfg.pca.components}" if cfg.model.input == "pca" else "pixels"
        marker = " (default)" if name == DEFAULT_PRESET else ""
        if cfg.model.m1 is not None:  # its input is the --m1 run's latents: counted for the default's 32
            data_dim, inp, marker = get_preset(DEFAULT_PRESET).model.latent_dim, "M1 latents", " (on 32 M1 latents)"
        n = count_parameters(build_vae(cfg.model, data_dim=data_dim, image_shape=shape))
        print(f"{name:<16} {cfg.data.dataset:<14} {inp:<10} {likelihood:<18} "
              f"{n:>13,} ({n / 1e6:.2f}M){marker}")


def cmd_train(args: argparse.Namespace) -> None:
    """`svhn-vae train`: the configuration (preset or --config, then the flags) trained into --run-dir;
    --resume continues it."""
    from svhn_vae import checkpoint
    from svhn_vae.distributed import launched_rank
    from svhn_vae.train import train

    base = None  # the preset, in its recipe for --likelihood
    if args.config is not None:
        base = load_config_file(args.config)
    elif args.preset is None and args.resume and (args.run_dir / checkpoint.CONFIG_FILE).exists():
        base = checkpoint.load_run_config(args.run_dir)
    config = config_from_args(args, base)
    result = train(config, run_dir=args.run_dir, resume=args.resume, overwrite=args.overwrite,
                   progress=not args.no_progress, tensorboard=args.tensorboard)
    last = result.history[-1] if result.history else {}
    summary = {"run_dir": str(args.run_dir), "epochs": len(result.history), "stopped_early": result.stopped_early,
               **{k: last[k] for k in ("loss", "rec", "kl", "val_loss", "images_per_s") if k in last}}
    if launched_rank() == 0:  # under torchrun, one summary for the run
        print(json.dumps(summary))


def cmd_export(args: argparse.Namespace) -> None:
    """`svhn-vae export RUN OUT`: write the run's card (see :func:`svhn_vae.export.export_run`)."""
    from svhn_vae.export import export_run

    out = export_run(args.run, args.out, which=args.which, overwrite=args.overwrite)
    print(f"wrote the run card {out}; load it with svhn_vae.load({str(out)!r})")


def cmd_data(args: argparse.Namespace) -> None:
    """`svhn-vae data download|generate|verify|info|ready`: fetch, make, check or describe a dataset's
    splits; own images (``folder:PATH``, ``npz:PATH``) are converted and described."""
    from svhn_vae import data

    if data.custom.is_own(args.dataset):
        _own_data(args)
        return
    data.loading.refuse_own_options(args.dataset, args.resize, args.test_fraction)
    splits = [args.split] if args.split else list(data.get_dataset(args.dataset).splits)
    if args.action == "ready":
        print(data.ready_dataset(args.dataset, fallback=args.fallback, data_dir=args.data_dir))
    elif args.action == "generate":
        _generate(args, splits)
    elif args.action == "download":
        for split in splits:
            data.download_split(args.dataset, split, data_dir=args.data_dir, progress=not args.no_progress)
        print(f"{args.dataset}: downloaded {', '.join(splits)}")
    elif args.action == "verify":
        for split in splits:
            data.verify_split(args.dataset, split, data_dir=args.data_dir)
        print(f"{args.dataset}: {', '.join(splits)} verified")
    elif args.json:
        print(json.dumps(data.info(args.dataset, data_dir=args.data_dir), indent=2, default=str))
    else:
        _print_info(data.info(args.dataset, data_dir=args.data_dir))


def _own_data(args: argparse.Namespace) -> None:
    """``data info|verify|ready`` of own images (converted first); nothing to download or generate."""
    from svhn_vae.data import custom

    if args.action in ("download", "generate"):
        raise UserError(f"{args.dataset} is your own images: nothing to {args.action}; 'data info' converts them")
    source = custom.OwnSource.from_name(args.dataset, resize=args.resize, test_fraction=args.test_fraction)
    summary = custom.describe(source, data_dir=args.data_dir, verify=args.action == "verify")
    if args.action == "ready":
        print(summary["dataset"])
    elif args.action == "verify":
        print(f"{summary['dataset']}: {summary['source_files']} source files and the cache in "
              f"{summary['data_dir']} verified")
    elif args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_info(summary)
        classes = summary["classes"]
        print("unlabelled" if classes is None else f"{len(classes)} classes: {', '.join(classes[:20])}"
              + (" ..." if len(classes) > 20 else ""))


def _generate(args: argparse.Namespace, splits: list[str]) -> None:
    """``data generate``: (re)make the splits of a generated dataset with the given seed and size."""
    from svhn_vae.data import get_dataset, resolve_data_dir, synth_digits

    if get_dataset(args.dataset).file_format != "generated":
        raise UserError(f"{args.dataset} is downloaded, not generated; use 'svhn-vae data download'")
    folder = resolve_data_dir(args.dataset, args.data_dir)
    for split in splits:
        record = synth_digits.generate_split(folder, split, num_examples=args.num_examples, seed=args.seed,
                                             workers=args.workers)
        print(f"{args.dataset}/{split}: {record['num_examples']} images (seed {record['seed']}) in "
              f"{record['seconds']:.1f} s, {record['images_per_s']:,.0f} images/s, in {folder}")


def _print_info(summary: dict[str, Any]) -> None:
    shape = "x".join(str(s) for s in summary["image_shape"])
    print(f"{summary['dataset']} ({shape}) in {summary['data_dir']}")
    print(f"{'split':<8} {'examples':>9}  {'present':<8} {'verified':<8}")
    for name, split in summary["splits"].items():
        print(f"{name:<8} {split['num_examples']:>9}  {str(split['present']).lower():<8} "
              f"{str(split['verified']).lower():<8}")


def cmd_pca_fit(args: argparse.Namespace) -> None:
    """`svhn-vae pca fit`: fit the exact PCA on a split, save it to --out and print the explained
    variance as JSON."""
    from svhn_vae.data import load_split
    from svhn_vae.pca import PCA
    from svhn_vae.representation import PIXEL_MAX, iter_rows

    images = load_split(args.dataset, args.split, data_dir=args.data_dir, resize=args.resize,
                        test_fraction=args.test_fraction).images
    pca = PCA(args.components, whiten=args.whiten)
    pca.fit_batches(rows / PIXEL_MAX for rows in iter_rows(images, 4096))
    pca.save(args.out)
    ratio = pca.explained_variance_ratio_
    print(json.dumps({"components": pca.n_components_, "explained_variance": float(ratio.sum()),
                      "noise_variance": pca.noise_variance_, "first_10": [round(float(r), 5) for r in ratio[:10]],
                      "out": str(args.out)}))


# --- parser ------------------------------------------------------------------------------------------


def _add_data_args(p: argparse.ArgumentParser, *, split: bool = True) -> None:
    from pathlib import Path

    p.add_argument("--dataset", required=True, help="svhn, mnist, fashion-mnist, synth-digits (generated here), "
                                                    "or own images: folder:PATH or npz:PATH")
    p.add_argument("--data-dir", type=Path, default=None, help="folder with the files (default: $SVHN_VAE_DATA or the user cache)")
    p.add_argument("--resize", default="", help="own images: resize to HxW (Lanczos)")
    p.add_argument("--test-fraction", type=float, default=0.0,
                   help="own images: share held out as the test split (0: their test/ part, else 0.1)")
    if split:
        p.add_argument("--split", default=None, help="one split (default: all)")


def build_parser() -> argparse.ArgumentParser:
    """The `svhn-vae` argument parser: every sub-command with its flags."""
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="svhn-vae", description="Variational autoencoders on SVHN, MNIST and Fashion-MNIST.")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="download (or generate), verify or describe a dataset")
    p.add_argument("action", choices=("download", "generate", "verify", "info", "ready"),
                   help="generate: (re)make a generated dataset (synth-digits) with --seed and --num-examples; "
                        "ready: make train and test available and print the dataset's name, or --fallback's "
                        "when the download server cannot be reached")
    _add_data_args(p)
    p.add_argument("--fallback", default=None, help="ready: dataset to use when --dataset cannot be downloaded")
    p.add_argument("--seed", type=int, default=0, help="generate: seed of the generated images")
    p.add_argument("--num-examples", type=int, default=None, help="generate: images per split (default: SVHN's sizes)")
    p.add_argument("--workers", type=int, default=None, help="generate: worker threads (default: one per CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="info: print every file's status as JSON")
    p.set_defaults(func=cmd_data)

    pca = sub.add_parser("pca", help="fit a PCA basis").add_subparsers(dest="pca_command", required=True, metavar="ACTION")
    p = pca.add_parser("fit", help="fit PCA on a split's pixels/255 and save it as .npz")
    _add_data_args(p, split=False)
    p.add_argument("--split", default="train", help="split to fit on (default: train)")
    p.add_argument("--components", type=int, required=True, help="number of components K")
    p.add_argument("--whiten", action="store_true", help="scale codes to unit variance")
    p.add_argument("--out", type=Path, required=True, help="output .npz file")
    p.set_defaults(func=cmd_pca_fit)

    p = sub.add_parser("presets", help="list the presets and their parameter counts")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("train", help="train a VAE into a run folder", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    start = p.add_mutually_exclusive_group()
    start.add_argument("--preset", default=None, choices=list(PRESETS),
                       help=f"starting configuration (default: {DEFAULT_PRESET}, or the run's own with --resume); "
                            "some have a recipe for another --likelihood (hierarchical for bernoulli)")
    start.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help="starting configuration from a file: a run's config.json, or TOML with the same sections")
    p.add_argument("--run-dir", type=Path, required=True, help="folder for config, metrics, checkpoints, figures")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --run-dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log loss terms, learning rate, speed and sample grids to RUN/tensorboard")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="write a self-contained run card that svhn_vae.load() reads")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("out", type=Path, help="folder to create")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint to export")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.set_defaults(func=cmd_export)

    cli_figures.add_commands(sub)
    cli_evaluate.add_commands(sub)
    cli_classify.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `svhn-vae` command on ``argv`` (``sys.argv`` when None); returns the exit status: 0,
    2 for a UserError (one line, no traceback), 130 after Ctrl-C."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    keep_freed_memory()
    try:
        args.func(args)
    except UserError as e:
        print(f"svhn-vae: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("svhn-vae: interrupted; a training run continues with 'svhn-vae train --run-dir DIR --resume'",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
