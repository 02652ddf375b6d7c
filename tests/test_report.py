"""The HTML report: tables, a single self-contained file with every figure, and rendering in Chromium."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_figures import TinyRun, make_run, one_thread  # noqa: F401 - an autouse fixture

from svhn_vae import cli
from svhn_vae.figures import png_bytes
from svhn_vae.report import ReportFigure, flatten, html_table, render_report

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
# Titles of the report's figures, in order ("Samples during training" is the grid the training loop wrote).
FIGURE_TITLES = ["Loss curves", "Samples during training", "Samples", "Posterior samples per digit",
                 "Reconstructions", "Latent interpolations"]


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


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyRun]:
    """A grayscale and an RGB run, each with a nested eval.json as ``svhn-vae evaluate`` writes."""
    made = {name: make_run(tmp_path_factory.mktemp(name), name) for name in ("mnist", "svhn")}
    for tiny in made.values():
        (tiny.path / "eval.json").write_text(json.dumps({"test": {"elbo": -1.5, "bpd": {"iwae": 2.25}}, "n": 20}))
    return made


@pytest.fixture(params=["mnist", "svhn"])
def run(request: pytest.FixtureRequest, runs: dict[str, TinyRun]) -> TinyRun:
    return runs[request.param]


# --- pieces --------------------------------------------------------------------------------------


def test_flatten_joins_nested_keys_with_dots() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [2, 3]}}, "e": None}) == {"a.b": 1, "a.c.d": [2, 3], "e": None}


def test_html_table_escapes_and_formats() -> None:
    table = html_table([{"name": "<b>", "value": 1 / 3}, {"name": "x", "other": (1, 2)}])
    assert "&lt;b&gt;" in table and "0.33333" in table and "1, 2" in table
    assert table.count("<th>") == 3  # name, value, other


def test_render_report_embeds_every_figure_and_notes_missing_ones() -> None:
    png = png_bytes(np.zeros((3, 4, 1), np.uint8))
    figures = [ReportFigure("one", png=png, table=[{"mse": 0.5}]), ReportFigure("two", note="Not made: no data")]
    page = parse(render_report(title="t <run>", config={"model": {"latent_dim": 4}}, figures=figures,
                               records=[{"epoch": 1, "loss": 2.0}], eval_metrics={"test": {"bpd": 3.0}}))
    assert [embedded_png(img).size for img in page.images] == [(4, 3)] and not page.external
    text = " ".join(page.text)
    assert all(s in text for s in ("t <run>", "Not made: no data", "model.latent_dim", "test.bpd", "mse"))


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
    assert all(s in text for s in ("test.bpd.iwae", "2.25", "val_loss", "data.dataset", "mse vae"))


def test_report_without_test_data_says_which_figures_are_missing(run: TinyRun, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    args = ["report", str(run.path), "--data-dir", str(tmp_path), "--regenerate", "--out", str(out)]
    assert cli.main(args) == 0
    page = parse(out.read_text())
    assert [img["alt"] for img in page.images] == ["Loss curves", "Samples during training", "Samples"]
    assert sum("Not made:" in t for t in page.text) == 3


@pytest.mark.skipif(BROWSER is None, reason="no chromium/chromium-browser binary (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(runs: dict[str, TinyRun], tmp_path: Path) -> None:
    run = runs["svhn"]
    assert cli.main(["report", str(run.path), "--data-dir", str(run.data_dir)]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,3000",
         (run.path / "report.html").resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (3000, 1200)
    assert (pixels < 250).mean() > 0.05  # not blank: text, tables and figures are drawn
