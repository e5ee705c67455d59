"""A self-contained HTML report of an evaluation: sections, paragraphs, tables, figures and notes in one file.

The file needs nothing else to be read, printed or archived with a study: CSS is inline, figures are embedded as
base64 PNG data URIs, and there are no scripts, web fonts or links to assets. Every string from the caller is
HTML-escaped, missing values print as "n/a", and a metric with an interval prints as ``0.871 (0.842-0.897)``, followed
by "not distinguishable from chance" when the metric says its interval includes chance (``"vs_chance"``, see
:mod:`~cardiodistill.evaluate.clinical`)::

    report = Report("Mobile-ECG triage: test set", "PTB-XL, fold 10")
    report.section("Discrimination", "AUROC with 95 % bootstrap intervals over patients.").table(rows)
    report.figure("roc.png", "ROC curves of the student and the 12-lead teacher").write("report.html")
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Mapping, Sequence
from html import escape
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, one_line
from ..io.atomic import write_text_atomic

__all__ = ["CHANCE_NOTES", "Report"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NOTE_KINDS = {"info": "Note", "warning": "Warning"}
_MISSING = "n/a"
#: What a metric's ``"vs_chance"`` verdict adds to its cell (nothing when it is above chance).
CHANCE_NOTES = {"not distinguishable": "not distinguishable from chance", "below": "below chance"}

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1d1d1f;
       max-width: 62rem; margin: 2rem auto; padding: 0 1.5rem; line-height: 1.5; font-size: 15px; }
h1 { font-size: 1.7rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d0d5; padding-bottom: 0.2rem; }
.subtitle { color: #55555a; margin-top: 0; font-size: 1.05rem; }
nav { background: #f5f5f7; padding: 0.6rem 1.2rem; border-radius: 4px; margin: 1.2rem 0; }
nav ol { margin: 0.3rem 0; padding-left: 1.4rem; }
nav a { color: #0b4f8a; text-decoration: none; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3rem; }
th, td { border: 1px solid #d0d0d5; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #eeeef2; }
tbody tr:nth-child(even) { background: #fafafc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.num .chance { display: block; white-space: normal; font-size: 0.8rem; color: #a0281d; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.9rem; color: #3a3a3f; margin-top: 0.3rem; }
.note { border-left: 4px solid #2f6fb0; background: #eef4fb; padding: 0.5rem 0.9rem; margin: 1rem 0; }
.note.warning { border-left-color: #c0392b; background: #fcefed; }
.empty { color: #55555a; font-style: italic; }
@media print {
  body { max-width: none; margin: 0; font-size: 11pt; }
  nav { background: none; border: 1px solid #d0d0d5; }
  nav a { color: inherit; }
  h2 { break-after: avoid; }
  table, figure, .note { break-inside: avoid; }
  @page { margin: 1.6cm; }
}
""".strip()


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, Real) and not isinstance(value, Integral) and math.isnan(value))


def _number(value: Any, float_format: str) -> str:
    """A number as text: integers as is, other reals with ``float_format``, None / NaN as "n/a"."""
    if _is_missing(value):
        return _MISSING
    if isinstance(value, Integral):
        return str(int(value))
    return float_format.format(float(value))


def _paragraphs(text: str) -> str:
    """Plain text as escaped ``<p>`` blocks: a blank line starts a new paragraph, a single newline breaks a line."""
    blocks = [b.strip() for b in str(text).replace("\r\n", "\n").split("\n\n")]
    return "\n".join(f"<p>{'<br>'.join(escape(line) for line in b.splitlines())}</p>" for b in blocks if b)


class Report:
    """An HTML report built block by block; every method but :meth:`write` returns the report, for chaining.

    Blocks added before the first :meth:`section` go under the title; the sections are listed in a table of
    contents. Write it with :meth:`write`.
    """

    def __init__(self, title: str, subtitle: str = ""):
        self.title = str(title)
        self.subtitle = str(subtitle)
        self._preamble: list[str] = []
        self._sections: list[tuple[str, list[str]]] = []

    def _add(self, block: str) -> Report:
        (self._sections[-1][1] if self._sections else self._preamble).append(block)
        return self

    def section(self, title: str, text: str = "") -> Report:
        """Start a section headed ``title``; ``text`` (plain, escaped) opens it as paragraphs."""
        self._sections.append((str(title), []))
        return self.paragraph(text) if text else self

    def paragraph(self, text: str) -> Report:
        """Plain text (escaped); a blank line separates paragraphs."""
        return self._add(_paragraphs(text))

    @staticmethod
    def metric_cell(m: Mapping[str, Any], float_format: str = "{:.3f}", *, chance: bool = True) -> str:
        """``"0.871 (0.842-0.897)"`` from ``{"value", "ci_low", "ci_high"}``.

        A missing value (None / NaN) gives "n/a"; a missing interval leaves the value alone; bounds below zero are
        joined by "to" so the minus sign cannot be misread. With ``chance``, a ``"vs_chance"`` verdict other than
        "above" is spelled out after a comma (``"0.481 (0.310-0.660), not distinguishable from chance"``).
        """
        value = m.get("value")
        if _is_missing(value):
            return _MISSING
        lo, hi = m.get("ci_low"), m.get("ci_high")
        text = _number(value, float_format)
        if _is_missing(lo) or _is_missing(hi):
            return text
        sep = "-" if min(lo, hi) >= 0 else " to "
        text = f"{text} ({_number(lo, float_format)}{sep}{_number(hi, float_format)})"
        note = CHANCE_NOTES.get(m.get("vs_chance"), "") if chance else ""
        return f"{text}, {note}" if note else text

    @classmethod
    def _cell(cls, value: Any, float_format: str) -> str:
        """One ``<td>``: metrics dicts and numbers right-aligned, everything else as escaped text."""
        if isinstance(value, Mapping) and "value" in value:
            note = CHANCE_NOTES.get(value.get("vs_chance"), "") if not _is_missing(value.get("value")) else ""
            flag = f'<span class="chance">{escape(note)}</span>' if note else ""
            return f'<td class="num">{escape(cls.metric_cell(value, float_format, chance=False))}{flag}</td>'
        if isinstance(value, bool):
            return f"<td>{'yes' if value else 'no'}</td>"
        if _is_missing(value) or isinstance(value, Real):
            return f'<td class="num">{escape(_number(value, float_format))}</td>'
        return f"<td>{escape(str(value))}</td>"

    def table(self, rows: Sequence[Mapping[str, Any]] | Any, caption: str = "", float_format: str = "{:.3f}") -> Report:
        """A table of ``rows`` (dicts; columns in order of first appearance) or a pandas DataFrame (a non-default
        index becomes the first columns). Metric dicts ``{"value", "ci_low", "ci_high"}`` print with
        :meth:`metric_cell` (a ``"vs_chance"`` verdict on a line of its own), floats with ``float_format``,
        None / NaN as "n/a"; a missing key is an empty cell."""
        if hasattr(rows, "to_dict") and hasattr(rows, "index"):
            import pandas as pd

            frame = rows if isinstance(rows.index, pd.RangeIndex) else rows.reset_index()
            rows = frame.to_dict("records")
        rows = list(rows)
        columns = list(dict.fromkeys(str(key) for row in rows for key in row))
        parts = ["<table>"]
        if caption:
            parts.append(f"<caption>{escape(str(caption))}</caption>")
        if not rows:
            parts.append('<tbody><tr><td class="empty">no rows</td></tr></tbody></table>')
            return self._add("".join(parts))
        parts.append("<thead><tr>" + "".join(f'<th scope="col">{escape(c)}</th>' for c in columns) + "</tr></thead>")
        parts.append("<tbody>")
        for row in rows:
            cells = {str(k): v for k, v in row.items()}
            parts.append("<tr>" + "".join(self._cell(cells[c], float_format) if c in cells else "<td></td>"
                                          for c in columns) + "</tr>")
        parts.append("</tbody></table>")
        return self._add("\n".join(parts))

    def figure(self, path_or_fig: str | os.PathLike[str] | Any, caption: str = "") -> Report:
        """Embed a PNG file or a matplotlib Figure (rendered at 150 dpi, then closed) as a base64 data URI."""
        if hasattr(path_or_fig, "savefig"):
            from ..viz import _plt

            buffer = io.BytesIO()
            try:
                path_or_fig.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
            finally:
                _plt().close(path_or_fig)
            data = buffer.getvalue()
        else:
            path = Path(path_or_fig)
            try:
                data = path.read_bytes()
            except OSError as err:
                raise DataError(f"cannot read the figure: {one_line(err)}", path) from None
            if not data.startswith(_PNG_SIGNATURE):
                raise DataError("the figure is not a PNG image", path)
        alt = escape(str(caption) or "figure", quote=True)
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        caption_html = f"<figcaption>{escape(str(caption))}</figcaption>" if caption else ""
        return self._add(f'<figure><img src="{uri}" alt="{alt}">{caption_html}</figure>')

    def note(self, text: str, kind: str = "info") -> Report:
        """A call-out box: ``"info"`` (blue) or ``"warning"`` (red), e.g. for small subgroups or a test set
        that differs from the intended population."""
        if kind not in _NOTE_KINDS:
            raise ConfigError(f"unknown note kind {kind!r}: use one of {list(_NOTE_KINDS)}")
        label = f"<strong>{_NOTE_KINDS[kind]}:</strong> "
        body = _paragraphs(text).replace("<p>", "<p>" + label, 1)
        return self._add(f'<div class="note {kind}" role="note">{body}</div>')

    def to_html(self) -> str:
        """The whole document as one string."""
        head = [f"<h1>{escape(self.title)}</h1>"]
        if self.subtitle:
            head.append(f'<p class="subtitle">{escape(self.subtitle)}</p>')
        body = head + self._preamble
        if self._sections:
            items = "".join(f'<li><a href="#section-{i}">{escape(title)}</a></li>'
                            for i, (title, _) in enumerate(self._sections, 1))
            body.append(f'<nav aria-label="Contents"><strong>Contents</strong><ol>{items}</ol></nav>')
        for i, (title, blocks) in enumerate(self._sections, 1):
            body.append(f'<section id="section-{i}">\n<h2>{escape(title)}</h2>')
            body.extend(blocks)
            body.append("</section>")
        return "\n".join([
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(self.title)}</title>",
            f"<style>\n{_CSS}\n</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ])

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the report as one self-contained UTF-8 HTML file, atomically; returns the path."""
        return write_text_atomic(path, self.to_html())
