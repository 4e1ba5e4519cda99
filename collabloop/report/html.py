"""The run viewer: report/index.html, a static page to browse a run's contexts, candidates, futures,
rewards, pairs and held-out conversations, opened from the file system (no server, no network).

    report/index.html          the headline and the plots (the PNGs beside it), and the browser
    report/viewer/viewer.js    the page's code; viewer.css its style
    report/viewer/index.js     one row per context and held-out opening (the list and its filters)
    report/viewer/iter_<i>_<c>.js, eval_<c>.js   the details, in chunks loaded when a row is opened

The data files are JavaScript that assigns to a global (`RV_INDEX`, `RV_CHUNKS`): Chromium blocks
fetch() of file:// URLs but not script tags. Model text is data, never markup: the JSON escapes `<`, `>`,
`&` and U+2028/2029, the page writes text with textContent only, and its Content-Security-Policy runs
no inline script or handler. The same run gives the same bytes (nothing time-dependent, every list in the
run's own order).
"""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path

from collabloop import paired
from collabloop.jsonl import atomic_file
from collabloop.report.collaboration import headline as collaboration_headline
from collabloop.report.plots import PLOTS
from collabloop.report.viewer_assets import VIEWER_CSS, VIEWER_JS
from collabloop.report.viewer_data import viewer_data

logger = logging.getLogger(__name__)

VIEWER_DIR = "viewer"
# Details per data file: a chunk stays a few MB at most with K=8 candidates of S=3 long futures each, so
# opening one context of a run of thousands loads one small file, not the run.
CONTEXTS_PER_CHUNK = 100
OPENINGS_PER_CHUNK = 50
# Scripts from the page's own folder only (file:// included), nothing inline, nothing from the network.
CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'"

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_JS_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def js_literal(obj) -> str:
    """JSON that is safe inside a script: no `</script>`, `<!--` or line separator can end or break it.

    The characters replaced occur in JSON only inside strings, where their \\u escapes mean the same.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _JS_UNSAFE[m.group()], text)


def _assign(name: str, key: str | None, obj) -> str:
    if key is None:
        return f"window.{name} = {js_literal(obj)};\n"
    return f"(window.{name} = window.{name} || {{}})[{js_literal(key)}] = {js_literal(obj)};\n"


def _markdown_line(line: str) -> str:
    """A report.md line as HTML: its **bold** kept, everything else escaped."""
    parts = _BOLD.split(line)
    return "".join(f"<strong>{html.escape(p)}</strong>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _chunked(rows: list[dict], details: list[dict], size: int, prefix: str) -> dict[str, dict]:
    """{chunk name: {id: detail}}, each row told which chunk holds its detail."""
    chunks: dict[str, dict] = {}
    for start in range(0, len(details), size):
        name = f"{prefix}_{start // size}"
        chunks[name] = {d["id"]: d for d in details[start:start + size]}
        for row in rows[start:start + size]:
            row["chunk"] = name
    return chunks


def _page(data: dict, figures: dict[str, Path | None]) -> str:
    its = data["iterations"]
    trained = ", ".join(str(i) for i, it in its.items() if it["trained"]) or "none"
    evaluated = ", ".join(str(i) for i, it in its.items() if it["eval"]) or "none"
    # The same headline line report.md opens with.
    headline = collaboration_headline(data) or paired.headline(data)
    plots = "\n".join(
        f'<figure><img src="{html.escape(path.name)}" alt="{html.escape(PLOTS[name][1])}">'
        f"<figcaption>{html.escape(PLOTS[name][1])}</figcaption></figure>"
        for name, path in figures.items() if path is not None)
    name = html.escape(data["run_name"])
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Run {name}</title>
<link rel="stylesheet" href="{VIEWER_DIR}/viewer.css">
</head>
<body>
<header>
<h1>Run {name}</h1>
<p id="headline">{_markdown_line(headline)}</p>
<p class="muted">Trained iterations: {trained} · evaluated iterations: {evaluated} ·
<a href="report.md">report.md</a></p>
<details id="plots"><summary>Plots</summary>
{plots or '<p class="muted">No plots: nothing to plot in this run.</p>'}
</details>
<nav id="views"></nav>
</header>
<main>
<aside id="side">
<div id="filters"></div>
<div id="pager"></div>
<ol id="list"></ol>
</aside>
<section id="detail"><p class="muted">Pick a context or a held-out opening on the left.</p></section>
</main>
<noscript>The viewer needs JavaScript; report.md holds the same headline and plots.</noscript>
<script src="{VIEWER_DIR}/index.js"></script>
<script src="{VIEWER_DIR}/viewer.js"></script>
</body>
</html>
"""


def write_viewer(data: dict, run_dir: str | Path, output_dir: str | Path, figures: dict[str, Path | None]) -> Path:
    """Write index.html (last) and its viewer/ folder for the run `data` was collected from; returns its path."""
    output_dir = Path(output_dir)
    view = viewer_data(data, run_dir)
    files: dict[str, str] = {"viewer.js": VIEWER_JS, "viewer.css": VIEWER_CSS}
    index = {"run_name": data["run_name"], "tasks": view["tasks"], "filters": view["filters"],
             "notes": view["notes"], "training": [], "evaluation": None}
    for training in view["training"]:
        prefix = f"iter_{training['iteration']}"
        for name, chunk in _chunked(training["rows"], training["details"], CONTEXTS_PER_CHUNK, prefix).items():
            files[f"{name}.js"] = _assign("RV_CHUNKS", name, chunk)
        index["training"].append({k: v for k, v in training.items() if k != "details"})
    evaluation = view["evaluation"]
    if evaluation is not None:
        for name, chunk in _chunked(evaluation["rows"], evaluation["details"], OPENINGS_PER_CHUNK, "eval").items():
            files[f"{name}.js"] = _assign("RV_CHUNKS", name, chunk)
        index["evaluation"] = {k: v for k, v in evaluation.items() if k != "details"}
    files["index.js"] = _assign("RV_INDEX", None, index)
    folder = output_dir / VIEWER_DIR
    for name, text in files.items():
        with atomic_file(folder / name) as f:
            f.write(text)
    # Chunks an earlier, larger report wrote would be stale; nothing links them any more.
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name not in files and path.suffix in (".js", ".css"):
            path.unlink()
    page = output_dir / "index.html"
    with atomic_file(page) as f:
        f.write(_page(data, figures))
    logger.info("wrote %s and %d files in %s", page, len(files), folder)
    return page
