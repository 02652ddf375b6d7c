"""A run's report: one self-contained HTML file (images embedded as base64 data: URIs, no scripts).

:func:`render_report` turns a run's config, metrics and figure PNGs into HTML text; it reads no
files, so what goes into the report is decided by the caller (the ``svhn-vae report`` command).
The helpers that read a run folder's optional files live here too.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVAL_FILE = "eval.json"
SAMPLES_DIR = "samples"

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: .9em; margin-top: .3em; }
img { image-rendering: pixelated; max-width: 100%; box-sizing: border-box; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: right; } th { background: #f4f4f4; }
td:first-child { text-align: left; } .note { color: #a33; }
"""


@dataclass
class ReportFigure:
    """One figure of the report: a PNG, or a note saying why it is missing."""

    title: str
    caption: str = ""
    png: bytes | None = None
    """PNG file contents, embedded as a data: URI."""
    note: str = ""
    """Shown instead of (or below) the image, e.g. why the figure could not be made."""
    table: Sequence[Mapping[str, Any]] = ()
    """Rows shown below the image (e.g. per-image errors)."""


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts flattened to one level with dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def read_eval(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``eval.json`` (written by ``svhn-vae evaluate``), or None when there is none."""
    path = Path(run_dir) / EVAL_FILE
    return json.loads(path.read_text()) if path.exists() else None


def latest_training_samples(run_dir: Path) -> Path | None:
    """The newest ``samples/epoch_NNNN.png`` written during training, or None."""
    files = sorted((Path(run_dir) / SAMPLES_DIR).glob("*.png"))
    return files[-1] if files else None


def _format(value: Any) -> str:
    """Cell text: floats with 5 significant digits, lists and tuples comma-separated."""
    if isinstance(value, float):
        return f"{value:.5g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(v) for v in value)
    return "" if value is None else str(value)


def html_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """An HTML table of rows; columns are the union of their keys in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_format(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def key_value_table(d: Mapping[str, Any]) -> str:
    """A two-column table of a (nested) dict, flattened with dotted keys."""
    return html_table([{"name": k, "value": v} for k, v in flatten(d).items()])


def _figure_html(fig: ReportFigure) -> str:
    parts = [f"<h2>{html.escape(fig.title)}</h2><figure>"]
    if fig.png is not None:
        parts.append(f'<img src="{data_uri(fig.png)}" alt="{html.escape(fig.title)}">')
    if fig.caption:
        parts.append(f"<figcaption>{html.escape(fig.caption)}</figcaption>")
    parts.append("</figure>")
    if fig.note:
        parts.append(f'<p class="note">{html.escape(fig.note)}</p>')
    if fig.table:
        parts.append(html_table(fig.table))
    return "".join(parts)


def _metrics_html(records: Sequence[Mapping[str, Any]], eval_metrics: Mapping[str, Any] | None) -> str:
    """Last epoch's metrics, every epoch (folded), and ``eval.json`` when present."""
    parts = ["<h2>Metrics</h2>"]
    if records:
        parts.append(f"<h3>Last epoch ({_format(records[-1].get('epoch'))})</h3>{key_value_table(records[-1])}")
        parts.append(f"<details><summary>All {len(records)} epochs (metrics.jsonl)</summary>"
                     f"{html_table(records)}</details>")
    else:
        parts.append('<p class="note">No metrics.jsonl in the run folder.</p>')
    if eval_metrics is not None:
        parts.append(f"<h3>Evaluation ({EVAL_FILE})</h3>{key_value_table(eval_metrics)}")
    return "".join(parts)


def render_report(*, title: str, config: Mapping[str, Any], figures: Sequence[ReportFigure],
                  records: Sequence[Mapping[str, Any]] = (), eval_metrics: Mapping[str, Any] | None = None,
                  summary: str = "") -> str:
    """The whole HTML document: title, summary line, metrics, figures, then the config."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    if summary:
        body.append(f"<p>{html.escape(summary)}</p>")
    body.append(_metrics_html(records, eval_metrics))
    body.extend(_figure_html(fig) for fig in figures)
    body.append(f"<h2>Configuration</h2>{key_value_table(config)}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
