"""Time and peak memory of the exact streaming PCA on an SVHN train+extra sized array.

Writes a synthetic uint8 array of 604,388 x 3072 (the size of SVHN train + extra, 1.86 GB) to a
memory-mapped file, then fits ``svhn_vae.pca.PCA`` on pixels/255 streamed in row batches, exactly
as training does. Generation runs in a child process so the peak resident memory reported is
that of the fit alone.

Run:  .venv/bin/python bench/pca_fit.py [--rows 604388] [--components 500] [--dir /tmp]
Prints one JSON line at the end: rows, dims, seconds, peak_rss_gb, explained_variance.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIMS = 3072


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Low-rank images plus noise, quantised to uint8, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(64, DIMS)).astype(np.float32) / 8
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, DIMS))
    for i in range(0, rows, 20000):
        n = min(20000, rows - i)
        x = 128 + 30 * rng.standard_normal((n, 64), dtype=np.float32) @ basis + rng.normal(0, 8, (n, DIMS))
        out[i:i + n] = np.clip(x, 0, 255).astype(np.uint8)
    out.flush()


def fit(path: Path, components: int) -> dict:
    from svhn_vae.pca import PCA
    from svhn_vae.representation import PIXEL_MAX, iter_rows

    images = np.load(path, mmap_mode="r")
    start = time.perf_counter()
    pca = PCA(components).fit_batches(rows / PIXEL_MAX for rows in iter_rows(images, 4096))
    seconds = time.perf_counter() - start
    return {"rows": len(images), "dims": images.shape[1], "components": components, "seconds": round(seconds, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
            "explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=604_388)
    parser.add_argument("--components", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary array is written")
    parser.add_argument("--generate-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_only:
        generate(args.generate_only, args.rows)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "images.npy"
        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--generate-only", str(path)], check=True)
        print(json.dumps(fit(path, args.components)))


if __name__ == "__main__":
    main()
