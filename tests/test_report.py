"""The HTML report: readings of the evaluation, tables, a single self-contained file with every figure,
and every figure decoded by Chromium to exactly its pixels."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_figures import TinyRun, make_run, one_thread  # noqa: F401 - an autouse fixture

from svhn_vae import cli
from svhn_vae.figures import png_bytes
from svhn_vae.readings import (
    BPD, ERROR, KL, PSNR, Comparison, readings, writeup_mismatches, writeup_table,
)
from svhn_vae.report import ReportFigure, config_docs, flatten, html_table, render_report

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
NO_BROWSER = "no chromium/chromium-browser binary (Debian: apt-get install chromium)"
# Titles of the report's figures, in order ("Samples during training" is the grid the training loop wrote).
FIGURE_TITLES = ["Loss curves", "Samples during training", "Samples", "Posterior samples per digit",
                 "Reconstructions", "Latent interpolations"]

# eval.json of a PCA model as `svhn-vae evaluate` writes it (README's `fast --dataset mnist` numbers).
PCA_EVAL: dict[str, Any] = {
    "run": "runs/mnist-fast", "which": "best", "preset": "fast", "dataset": "mnist", "split": "test", "n": 10000,
    "importance_samples": 1000, "seed": 0, "epoch": 30, "likelihood": "gaussian-logvar", "data": "dequantized",
    "dims": 784, "elbo_nats": 2398.2, "iwae_nats": 2410.5, "nll_nats": -2410.5, "bpd_elbo": 6.161, "bpd_iwae": 6.138,
    "pca_space": {"rec": -98.1, "kl": 20.2, "elbo": -118.3, "components": 300, "eps": None,
                  "reference_blog_2017": {"rec": -106.93, "kl": 13.58, "source": "the write-up"}},
    "reconstruction": {"mse": 0.01, "psnr": 20.0, "pca_only_mse": 0.002, "pca_only_psnr": 26.99},
    "baselines": {"ppca_components": 300, "ridge": 1e-6, "train_n": 60000, "gaussian_nats": -2500.0,
                  "gaussian_bpd": 5.289, "ppca_nats": -2300.0, "ppca_bpd": 6.238},
    "bpd_gain_over_ppca": 0.1,
    "probe": {"encoder": "posterior mean", "latent_dim": 32, "results": {
        "100": {"labels": 100, "draws": 10, "knn_k": 5, "knn_error": 0.303, "knn_error_std": 0.012,
                "logreg_error": 0.296, "logreg_error_std": 0.01},
        "1000": {"skipped": "needs 1000 labelled examples, the training set has 500"},
        "all": {"labels": 60000, "draws": 1, "knn_k": 5, "knn_error": 0.05, "knn_error_std": 0.0,
                "logreg_error": 0.08, "logreg_error_std": 0.0, "note": "one draw: the whole training set"}},
        "reference": {"source": "Kingma et al. 2014",
                      "mnist": {"M1+TSVM_100": 0.1182, "M1+M2_100": 0.0333, "M1+TSVM_1000": 0.0424},
                      "svhn": {"M1+TSVM_1000": 0.5533, "M1+M2_1000": 0.3602}}},
    "quality": {"fid_classifier": 110.4, "fid_floor_train_vs_test": 0.69, "n_samples": 10000, "n_reference": 10000,
                "classifier_test_accuracy": 0.98, "label_histogram": [0.1] * 10, "classes_covered": 10,
                "classes_covered_threshold": 0.01, "label_entropy_bits": 3.2, "label_entropy_max_bits": 3.3219,
                "mean_confidence": 0.9, "test_set": {"label_entropy_bits": 3.32}, "note": "domain-specific"},
}
# eval.json of a Bernoulli model (README's `mnist-bernoulli` numbers), without probe and quality.
BERNOULLI_EVAL: dict[str, Any] = {
    "dataset": "mnist", "split": "test", "n": 10000, "importance_samples": 1000, "data": "binarized", "dims": 784,
    "elbo_nats": -93.29, "iwae_nats": -88.57, "nll_nats": 88.57, "bpd_elbo": 0.1717, "bpd_iwae": 0.163,
    "pca_space": None, "reconstruction": {"mse": 0.02, "psnr": 16.99, "pca_only_mse": None, "pca_only_psnr": None},
    "baselines": {"independent_bernoulli_nats": 205.97, "independent_bernoulli_bpd": 0.379, "train_n": 60000},
    "nats_gain_over_independent": 117.4,
}
WRITEUP_CONFIG = {"data": {"dequantize": False}, "pca": {"components": 500, "whiten": False}}


class _Page(HTMLParser):
    """Collects every <img>, every external reference and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(a)
        for key in ("src", "href"):
            if key in a and not a[key].startswith("data:"):
                self.external.append(a[key])

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def embedded_png(img: dict[str, str]) -> Image.Image:
    """The image of an <img> whose src must be a base64 PNG data: URI."""
    prefix = "data:image/png;base64,"
    assert img["src"].startswith(prefix), img["src"][:40]
    return Image.open(io.BytesIO(base64.b64decode(img["src"][len(prefix):])))


def by_metric(found: list[Any]) -> dict[str, str]:
    """{metric: text} of a list of readings."""
    return {r.metric: r.text for r in found}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyRun]:
    """A grayscale PCA run and an RGB Bernoulli run, each with an eval.json as ``svhn-vae evaluate`` writes."""
    made = {name: make_run(tmp_path_factory.mktemp(name), name) for name in ("mnist", "svhn")}
    pca_eval = copy.deepcopy(PCA_EVAL)
    pca_eval["pca_space"]["components"] = 10  # the tiny run's K
    (made["mnist"].path / "eval.json").write_text(json.dumps(pca_eval))
    (made["svhn"].path / "eval.json").write_text(json.dumps({**BERNOULLI_EVAL, "dataset": "svhn"}))
    return made


@pytest.fixture(params=["mnist", "svhn"])
def run(request: pytest.FixtureRequest, runs: dict[str, TinyRun]) -> TinyRun:
    return runs[request.param]


# --- readings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("comparison", "verdict", "sentence"), [
    (Comparison("the full-covariance Gaussian", 6.138, 5.289, BPD), "worse",
     "0.849 bits/dim worse than the full-covariance Gaussian (5.289 bits/dim)"),
    (Comparison("PPCA", 6.138, 6.238, BPD), "better", "0.100 bits/dim better than PPCA (6.238 bits/dim)"),
    (Comparison("the projection", 20.0, 26.99, PSNR), "worse", "6.99 dB worse than the projection (26.99 dB)"),
    (Comparison("M1+M2", 0.02, 0.0333, ERROR), "better", "1.3 percentage points better than M1+M2 (3.3%)"),
    (Comparison("the write-up", 20.2, 13.58, KL), "higher", "6.62 nats higher than the write-up (13.58 nats)"),
    (Comparison("PPCA", 6.1381, 6.1379, BPD), "level", "level with PPCA (6.138 bits/dim)"),
])
def test_comparison_decides_better_or_worse_by_the_metrics_direction(comparison: Comparison, verdict: str,
                                                                     sentence: str) -> None:
    assert comparison.verdict == verdict
    assert comparison.sentence() == sentence


def test_the_likelihood_is_compared_with_the_best_baseline_first() -> None:
    """A discrete model's reading: the histogram, best of the three here, comes first, whatever the
    more flattering Gaussian baselines say."""
    m = {"bpd_iwae": 1.30, "data": "8-bit", "nll_nats": 706.5, "importance_samples": 100, "n": 10000,
         "baselines": {"gaussian_bpd": 5.289, "ppca_bpd": 5.285, "histogram_bpd": 1.689, "ppca_components": 32,
                       "best": "histogram", "best_bpd": 1.689}}
    text = by_metric(readings(m))["Test likelihood"]
    assert ("This is 0.389 bits/dim better than the independent per-pixel histogram (the best baseline) "
            "(1.689 bits/dim); 3.989 bits/dim better than the full-covariance Gaussian") in text
    assert "the 8-bit values themselves" in text and "never negative" in text


def test_readings_of_a_pca_model_in_order_with_baselines_and_published_figures() -> None:
    found = readings(PCA_EVAL)
    assert [r.metric for r in found] == ["Test likelihood", "ELBO", "Reconstruction", "PCA-space ELBO",
                                         "Latent probe, 100 labels", "Latent probe, all labels",
                                         "Sample quality (FID)", "Sample diversity"]
    text = by_metric(found)
    assert found[0].value == "6.138 bits/dim"
    assert ("This is 0.849 bits/dim worse than the full-covariance Gaussian (the best baseline) (5.289 bits/dim); "
            "0.100 bits/dim better than PPCA with 300 components (6.238 bits/dim).") in text["Test likelihood"]
    assert "lower is better" in text["Test likelihood"] and "K=1000 importance samples" in text["Test likelihood"]
    assert "12.30 nats tighter" in text["ELBO"]
    assert "6.99 dB worse than the PCA projection alone (26.99 dB)" in text["Reconstruction"]
    assert "This run differs (K=300 components, not 500)" in text["PCA-space ELBO"]
    assert "not comparable" in text["PCA-space ELBO"] and not found[3].comparisons


def test_probe_reading_compares_the_better_probe_with_kingma_et_al() -> None:
    text = by_metric(readings(PCA_EVAL))
    assert ("The better probe (logistic regression) is 17.8 percentage points worse than Kingma et al. 2014's "
            "M1+TSVM (11.8%); 26.3 percentage points worse than Kingma et al. 2014's M1+M2 (3.3%).") in \
        text["Latent probe, 100 labels"]
    assert "Latent probe, 1,000 labels" not in text  # skipped: left out
    assert "Kingma" not in text["Latent probe, all labels"]  # no published figure with every label
    svhn = by_metric(readings({**PCA_EVAL, "dataset": "svhn"}))
    assert "Kingma" not in svhn["Latent probe, 100 labels"]  # their SVHN figures are at 1000 labels only


def test_quality_readings_compare_with_the_floor_and_warn_about_inception() -> None:
    found = readings(PCA_EVAL)
    fid, diversity = found[-2], found[-1]
    assert [c.verdict for c in fid.comparisons] == ["worse"] and fid.value == "110.40"
    assert "109.71 worse than the floor of training vs test images (0.69)" in fid.text
    assert "160 times the floor" in fid.text and "never with the Inception FIDs" in fid.text
    assert diversity.value == "10 of 10 classes, 3.20 bits"
    assert "0.12 bits worse than the test images (3.32 bits)" in diversity.text


def test_readings_of_a_bernoulli_model_on_mnist_cite_the_iwae_paper() -> None:
    found = readings(BERNOULLI_EVAL)
    assert [r.metric for r in found] == ["Test NLL", "ELBO", "Reconstruction"]
    assert found[0].value == "88.57 nats"
    assert ("This is 117.40 nats better than independent Bernoulli pixels (205.97 nats); 1.81 nats worse than "
            "the IWAE paper's one-layer VAE (86.76 nats).") in found[0].text
    assert "Per binary pixel: 0.1630 bits" in found[0].text and not found[2].comparisons  # no PCA-only figure
    fashion = readings({**BERNOULLI_EVAL, "dataset": "fashion-mnist"})
    assert "IWAE paper" not in fashion[0].text  # the paper's figure is for MNIST only
    assert "IWAE paper" in readings({**BERNOULLI_EVAL, "dataset": None}, config={"data": {"dataset": "mnist"}})[0].text


def test_absent_parts_are_left_out() -> None:
    assert readings({}) == []
    partial = {"bpd_iwae": 6.1, "baselines": None, "pca_space": None, "probe": None, "quality": None,
               "reconstruction": None, "elbo_nats": float("nan")}
    found = readings(partial)
    assert [r.metric for r in found] == ["Test likelihood"] and found[0].comparisons == ()
    assert "In nats per image" not in found[0].text and "K=" not in found[0].text
    no_floor = copy.deepcopy(PCA_EVAL)
    del no_floor["quality"]["fid_floor_train_vs_test"], no_floor["baselines"]["gaussian_bpd"]
    text = by_metric(readings(no_floor))
    assert "floor of training" not in text["Sample quality (FID)"] and "full-covariance" not in text["Test likelihood"]


@pytest.mark.parametrize(("components", "config", "expected"), [
    (500, WRITEUP_CONFIG, []),
    (500, None, []),  # settings that eval.json does not record are not held against the run
    (700, {"data": {"dequantize": True}, "pca": {"whiten": True}},
     ["K=700 components, not 500", "whitened codes (which changes their units, so the nats)",
      "dequantized pixels, not pixels/255"]),
])
def test_writeup_mismatches(components: int, config: dict[str, Any] | None, expected: list[str]) -> None:
    assert writeup_mismatches(components, config) == expected


def test_writeup_table_compares_only_in_the_writeups_setting() -> None:
    same = copy.deepcopy(PCA_EVAL)
    same["pca_space"]["components"] = 500
    table = writeup_table(same, WRITEUP_CONFIG)
    assert [(r["quantity"], r["this run"], r["2017 write-up (published)"], r["reading"]) for r in table.rows] == [
        ("reconstruction term log p(c|z)", "-98.10 nats", "-106.93 nats", "8.83 nats better (higher is better)"),
        ("KL(q(z|x) || p(z))", "20.20 nats", "13.58 nats", "6.62 nats higher"),
        ("ELBO (reconstruction - KL)", "-118.30 nats", "-120.51 nats", "2.21 nats better (higher is better)"),
        ("PCA components K", "500", "500", "same")]
    assert "K=500 principal components of pixels/255" in table.note and "comparable." in table.note
    other = writeup_table(PCA_EVAL, WRITEUP_CONFIG)
    assert {r["reading"] for r in other.rows[:3]} == {"not comparable (see below)"}
    assert "This run differs (K=300 components, not 500)" in other.note
    assert writeup_table(BERNOULLI_EVAL) is None  # pixel models have no PCA space


# --- pieces of the page --------------------------------------------------------------------------


def test_flatten_joins_nested_keys_with_dots() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [2, 3]}}, "e": None}) == {"a.b": 1, "a.c.d": [2, 3], "e": None}


def test_html_table_escapes_and_formats() -> None:
    table = html_table([{"name": "<b>", "value": 1 / 3}, {"name": "x", "other": (1, 2)}])
    assert "&lt;b&gt;" in table and "0.33333" in table and "1, 2" in table
    assert table.count("<th>") == 3  # name, value, other


def test_config_docs_are_the_field_docstrings() -> None:
    docs = config_docs()
    assert list(docs) == ["data", "pca", "model", "train"]
    assert docs["model"]["latent_dim"] == "Number of latent dimensions."
    assert "\n" not in docs["model"]["relative_variance"]  # multi-line docstrings on one line


def test_render_report_embeds_every_figure_and_notes_missing_ones() -> None:
    png = png_bytes(np.zeros((3, 4, 1), np.uint8))
    figures = [ReportFigure("one", png=png, table=[{"mse": 0.5}]), ReportFigure("two", note="Not made: no data")]
    page = parse(render_report(title="t <run>", config={"model": {"latent_dim": 4}}, figures=figures,
                               records=[{"epoch": 1, "loss": 2.0}], eval_metrics={"test": {"bpd": 3.0}}))
    assert [embedded_png(img).size for img in page.images] == [(4, 3)] and not page.external
    text = " ".join(page.text)
    assert all(s in text for s in ("t <run>", "Not made: no data", "latent_dim", "test.bpd", "mse"))
    assert "What the numbers say" not in text  # nothing in that eval dict has a reading


def test_render_report_reads_the_evaluation_and_describes_the_config() -> None:
    config = {"preset": "blog-2017", **copy.deepcopy(WRITEUP_CONFIG), "model": {"decoder": (), "latent_dim": 512}}
    same = copy.deepcopy(PCA_EVAL)
    same["pca_space"]["components"] = 500
    html = render_report(title="r", config=config, figures=[], eval_metrics=same, config_descriptions=config_docs())
    text = " ".join(parse(html).text)
    assert "0.849 bits/dim worse than the full-covariance Gaussian" in text
    assert "Against the 2017 write-up's PCA-space numbers" in text and "8.83 nats better" in text
    assert "bpd_iwae" in text and "probe.results.100.logreg_error" in text  # every number, folded
    sections = re.findall(r"<h3>(data|pca|model|train)</h3>", html)
    assert sections == ["data", "pca", "model"]
    assert re.search(r"<td>latent_dim</td><td>512</td><td>Number of latent dimensions\.</td>", html)
    assert "<td>decoder</td><td>()</td>" in html and "<td>preset</td><td>blog-2017</td>" in html
    assert "No metrics.jsonl" in text
    no_eval = " ".join(parse(render_report(title="r", config=config, figures=[])).text)
    assert 'run "svhn-vae evaluate RUN"' in no_eval


# --- the command ---------------------------------------------------------------------------------


def test_report_is_one_file_with_every_figure_and_the_metrics(run: TinyRun) -> None:
    assert cli.main(["report", str(run.path), "--data-dir", str(run.data_dir)]) == 0
    page = parse((run.path / "report.html").read_text())
    assert [img["alt"] for img in page.images] == FIGURE_TITLES and not page.external
    mode = "L" if run.dataset == "mnist" else "RGB"
    assert all(embedded_png(img).mode == mode for img in page.images[1:])  # the curves are RGB
    for name in ("samples", "analogies", "reconstructions", "interpolations", "curves"):
        assert (run.path / "figures" / f"{name}.png").exists()  # made because they were missing
    text = " ".join(page.text)
    assert all(s in text for s in ("What the numbers say", "lower is better", "val_loss", "mse vae",
                                   "Dataset name: svhn, mnist, fashion-mnist, synth-digits"))
    if run.pca:  # the tiny run keeps 10 components and whitens them: not the write-up's setting
        assert "This run differs (K=10 components, not 500; whitened codes" in text
    else:
        assert "IWAE paper" not in text and "Against the 2017 write-up" not in text  # SVHN, pixels


def test_report_without_test_data_says_which_figures_are_missing(run: TinyRun, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    args = ["report", str(run.path), "--data-dir", str(tmp_path), "--regenerate", "--out", str(out)]
    assert cli.main(args) == 0
    page = parse(out.read_text())
    assert [img["alt"] for img in page.images] == ["Loss curves", "Samples during training", "Samples"]
    assert sum("Not made:" in t for t in page.text) == 3


# --- in a real browser ---------------------------------------------------------------------------

# Injected into a copy of the report (which itself has no scripts): after every image has loaded or
# failed, draw each <img> on a canvas and write its decoded size, its size on the page and a
# position-weighted checksum of its RGB bytes into a <pre>, which --dump-dom then prints. A broken
# image decodes to 0x0; a truncated or corrupted one may keep its header's size, but not its pixels.
_RENDER_CHECK = """<script>
window.addEventListener("load", () => {
  const found = [...document.images].map((img) => {
    const box = img.getBoundingClientRect();
    let checksum = null;
    if (img.naturalWidth > 0) {
      const canvas = document.createElement("canvas");
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0);
      const rgba = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      checksum = 0;
      for (let i = 0, k = 0; i < rgba.length; i += 4)
        for (let c = 0; c < 3; c++, k++) checksum += rgba[i + c] * (k % 251 + 1);
    }
    return {alt: img.alt, width: img.naturalWidth, height: img.naturalHeight, shown: [box.width, box.height],
            checksum};
  });
  const out = document.createElement("pre");
  out.id = "render-check";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>"""


def png_checksum(image: Image.Image) -> int:
    """The injected script's checksum of an image: sum of RGB bytes (row-major) times (index % 251 + 1)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int64).ravel()
    return int((rgb * (np.arange(rgb.size) % 251 + 1)).sum())


def rendered_images(html: str, tmp_path: Path) -> list[dict[str, Any]]:
    """What headless Chromium made of each <img> of ``html`` (see ``_RENDER_CHECK``)."""
    page = tmp_path / "checked.html"
    page.write_text(html.replace("</body>", _RENDER_CHECK + "</body>"), encoding="utf-8")
    dom = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,3000", "--dump-dom", page.resolve().as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom, flags=re.DOTALL)
    assert found is not None, "the check script did not run"
    return json.loads(unescape(found.group(1)))


def render_failures(html: str, tmp_path: Path, expected: list[Image.Image] | None = None) -> list[str]:
    """Every <img> that Chromium did not draw with exactly the size and pixels of the ``expected``
    image (default: its embedded PNG as Pillow decodes it), with why."""
    images = parse(html).images
    expected = expected if expected is not None else [embedded_png(img) for img in images]
    failures = []
    for expected, seen in zip(expected, rendered_images(html, tmp_path), strict=True):
        if (seen["width"], seen["height"]) != expected.size:
            failures.append(f"{seen['alt']}: decoded {seen['width']}x{seen['height']}, the PNG is {expected.size}")
        elif seen["checksum"] != png_checksum(expected):
            failures.append(f"{seen['alt']}: decoded pixels differ from the PNG's")
        elif min(seen["shown"]) <= 0:
            failures.append(f"{seen['alt']}: not laid out on the page")
    return failures


@pytest.mark.skipif(BROWSER is None, reason=NO_BROWSER)
def test_report_renders_every_figure_in_headless_chromium(run: TinyRun, tmp_path: Path) -> None:
    assert cli.main(["report", str(run.path), "--data-dir", str(run.data_dir)]) == 0
    html = (run.path / "report.html").read_text()
    assert [img["alt"] for img in parse(html).images] == FIGURE_TITLES
    assert render_failures(html, tmp_path) == []


@pytest.mark.skipif(BROWSER is None, reason=NO_BROWSER)
def test_chromium_check_catches_corrupted_image_data(tmp_path: Path) -> None:
    png = png_bytes(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    idat = png.index(b"IDAT") + 20
    figures = [ReportFigure("intact", png=png),
               ReportFigure("garbage", png=b"\x89PNG\r\n\x1a\n not an image"),
               ReportFigure("truncated", png=png[:len(png) // 2]),  # keeps its header's 40x30
               ReportFigure("flipped", png=png[:idat] + bytes(b ^ 0xFF for b in png[idat:idat + 40]) + png[idat + 40:])]
    intact = Image.open(io.BytesIO(png))
    failures = render_failures(render_report(title="corrupt", config={}, figures=figures), tmp_path, [intact] * 4)
    assert [f.split(":")[0] for f in failures] == ["garbage", "truncated", "flipped"]
