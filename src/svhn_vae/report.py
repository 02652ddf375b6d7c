"""A run's report: one self-contained HTML file (images embedded as base64 data: URIs, no scripts).

:func:`render_report` turns a run's config, metrics, evaluation and figure PNGs into HTML text: the
evaluation's numbers each with a plain-language reading (:mod:`svhn_vae.readings`), the write-up's
PCA-space numbers beside the run's, the training metrics, the figures, and the config as one
table per section with each setting's description. It reads no files, so what goes into the report
is decided by the caller (the ``svhn-vae report`` command). The helpers that read a run folder's
optional files, and the config's field descriptions, live here too.
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

from svhn_vae.config import SECTIONS, field_docs
from svhn_vae.readings import Reading, WriteupTable, readings, writeup_table

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
table.text td, table.text th { text-align: left; vertical-align: top; }
.muted { color: #555; font-size: .9em; }
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


def config_docs() -> dict[str, dict[str, str]]:
    """{section: {field: description}} of the config dataclasses, from their field docstrings
    (whitespace collapsed to single spaces)."""
    return {section: {name: " ".join(doc.split()) for name, doc in field_docs(cls).items()}
            for section, cls in SECTIONS.items()}


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


def html_table(rows: Sequence[Mapping[str, Any]], *, text: bool = False) -> str:
    """An HTML table of rows; columns are the union of their keys in first-seen order. ``text``:
    every column left-aligned (prose), else numbers to the right."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_format(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows
    )
    opening = '<table class="text">' if text else "<table>"
    return f"{opening}<tr>{head}</tr>{body}</table>"


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


def _training_html(records: Sequence[Mapping[str, Any]]) -> str:
    """Last epoch's metrics, and every epoch (folded)."""
    parts = ["<h2>Training metrics</h2>"]
    if not records:
        return parts[0] + '<p class="note">No metrics.jsonl in the run folder.</p>'
    parts.append(f"<h3>Last epoch ({_format(records[-1].get('epoch'))})</h3>{key_value_table(records[-1])}")
    parts.append(f"<details><summary>All {len(records)} epochs (metrics.jsonl)</summary>"
                 f"{html_table(records)}</details>")
    return "".join(parts)


def _readings_table(found: Sequence[Reading]) -> str:
    rows = [{"metric": r.metric, "value": r.value, "how it compares": r.verdict, "what it measures": r.meaning,
             f"{EVAL_FILE} keys": ", ".join(r.keys)} for r in found]
    return f"<h3>What the numbers say</h3>{html_table(rows, text=True)}"


def _writeup_html(table: WriteupTable) -> str:
    return (f"<h3>Against the 2017 write-up's PCA-space numbers</h3>{html_table(table.rows, text=True)}"
            f'<p class="muted">{html.escape(table.note)}</p>')


def _evaluation_html(eval_metrics: Mapping[str, Any] | None, config: Mapping[str, Any]) -> str:
    """Each metric with its reading, the write-up comparison (PCA models), then every number (folded)."""
    parts = ["<h2>Evaluation</h2>"]
    if eval_metrics is None:
        return parts[0] + f'<p class="note">No {EVAL_FILE} in the run folder: run "svhn-vae evaluate RUN".</p>'
    found = readings(eval_metrics, config=config)
    if found:
        parts.append(_readings_table(found))
    table = writeup_table(eval_metrics, config)
    if table is not None:
        parts.append(_writeup_html(table))
    parts.append(f"<details><summary>Every number of {EVAL_FILE}</summary>{key_value_table(eval_metrics)}</details>")
    return "".join(parts)


def _config_value(value: Any) -> str:
    """A setting as it reads: None and empty tuples spelt out (a blank cell would look unset)."""
    if value is None:
        return "None"
    return "()" if isinstance(value, (list, tuple)) and not value else _format(value)


def _config_html(config: Mapping[str, Any], docs: Mapping[str, Mapping[str, str]]) -> str:
    """One table per section (data, pca, model, train): setting, value, description."""
    parts = ["<h2>Configuration</h2>"]
    top = [{"setting": k, "value": _config_value(v)} for k, v in config.items() if not isinstance(v, Mapping)]
    if top:
        parts.append(html_table(top, text=True))
    for section, values in config.items():
        if isinstance(values, Mapping):
            rows = [{"setting": name, "value": _config_value(value), "description": docs.get(section, {}).get(name, "")}
                    for name, value in values.items()]
            parts.append(f"<h3>{html.escape(section)}</h3>{html_table(rows, text=True)}")
    return "".join(parts)


def render_report(*, title: str, config: Mapping[str, Any], figures: Sequence[ReportFigure],
                  records: Sequence[Mapping[str, Any]] = (), eval_metrics: Mapping[str, Any] | None = None,
                  summary: str = "", config_descriptions: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The whole HTML document: title, summary line, evaluation with readings, training metrics,
    figures, then the config (``config_descriptions``: {section: {field: text}}, see :func:`config_docs`)."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    if summary:
        body.append(f"<p>{html.escape(summary)}</p>")
    body.append(_evaluation_html(eval_metrics, config))
    body.append(_training_html(records))
    body.extend(_figure_html(fig) for fig in figures)
    body.append(_config_html(config, config_descriptions or {}))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
