"""The run report: did the model become a better collaborator, and what did each stage do.

    python -m collabloop.report --run_dir data/runs/demo [--output_dir data/runs/demo/report]

writes `<output_dir>/report.md` and the PNG plots it links:

1. a headline line: the last evaluated iteration against iteration 0 (the
   initial model) on the task metric, paired by task (collabloop/paired.py),
   per split when the held-out tasks say which openings withhold a fact
   (`metadata.underspecified`, report/collaboration.py); a table of the
   evaluation metrics (`iter_<i>/eval/summary.json`) of every evaluated
   iteration and their change from the first to the last; every evaluated
   iteration against iteration 0, paired by task with a paired bootstrap
   interval (`iter_<i>/eval/conversations.jsonl`), and the same per split;
2. plots: candidate reward (MR) and pair margin distributions, per-metric
   means with bootstrap intervals (training candidates, and evaluation when
   present), training curves from each iteration's `log_history`;
3. a table of counts, failures and seconds per stage and iteration, from the
   stages' meta files and `metrics.json`, and what the simulated users did;

and `<output_dir>/index.html`, a page to browse the run in a browser (report/html.py): each context's
candidates ranked by reward, their metrics and simulated futures, the pair built from them, and each
held-out opening played by iteration 0 and the later iterations side by side.

    python -m collabloop.report --compare RUN_A RUN_B [--output_dir DIR]

compares two runs' last evaluations task by task instead (report/compare.py).

The same run gives the same report.md: bootstrap intervals are seeded and
nothing time-dependent is written. The plots are written first and report.md
last, atomically, so a crash never leaves a half report. Missing pieces (an
iteration without pairs or a model) are reported as missing, a damaged meta
file as damaged (`stage.read_meta` reads it as none); a corrupt JSONL line
raises `RecordError` (file:line:field).

`reading.collect` reads the run, `plots` draws the PNGs, `markdown` writes
report.md; `write_report` here puts them in that order.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from collabloop.jsonl import atomic_file
from collabloop.report.compare import write_compare
from collabloop.report.html import write_viewer
from collabloop.report.markdown import render_markdown
from collabloop.report.plots import PLOTS
from collabloop.report.reading import collect

__all__ = ["collect", "main", "render_markdown", "write_compare", "write_report"]

logger = logging.getLogger(__name__)


def write_report(run_dir: str | Path, output_dir: str | Path | None = None) -> Path:
    """Collect, plot, write the run viewer (index.html) and report.md (last, atomically); returns report.md's path."""
    data = collect(run_dir)
    output_dir = Path(output_dir) if output_dir is not None else Path(run_dir) / "report"
    output_dir.mkdir(parents=True, exist_ok=True)
    figures = {name: plot(data, output_dir / f"{name}.png") for name, (plot, _) in PLOTS.items()}
    # The browsable page links the same plots; it goes before report.md, which stays the last file written.
    write_viewer(data, run_dir, output_dir, figures)
    report_path = output_dir / "report.md"
    with atomic_file(report_path) as f:
        f.write(render_markdown(data, figures))
    # A plot an earlier report made but this one has no data for would be stale; report.md no longer links it.
    for name, written in figures.items():
        if written is None:
            (output_dir / f"{name}.png").unlink(missing_ok=True)
    logger.info("wrote %s with %d plots", report_path, sum(p is not None for p in figures.values()))
    return report_path


def _first_line(path: Path, prefix: str) -> str | None:
    return next((line for line in path.read_text().splitlines() if line.startswith(prefix)), None)


def main(argv: list[str] | None = None) -> None:
    # prog: under `python -m` argparse would name the package's __main__.py.
    parser = argparse.ArgumentParser(prog="python -m collabloop.report", description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run_dir", help="a run folder, e.g. data/runs/demo")
    what.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                      help="compare two runs' last evaluations task by task (B − A), e.g. a single-turn reward "
                           "run and a multiturn-aware one")
    parser.add_argument("--output_dir", default=None,
                        help="where report.md, index.html and the plots go (default: RUN_DIR/report); with --compare, "
                             "where compare.md goes (default: RUN_B/report/compare_<name of RUN_A>)")
    args = parser.parse_args(argv)
    if args.compare:
        path = write_compare(*args.compare, args.output_dir)
        headline = _first_line(path, "**Compare:**")
    else:
        path = write_report(args.run_dir, args.output_dir)
        headline = _first_line(path, "**Headline:**")
    # The headline for the console too, the path last.
    if headline:
        print(headline.replace("**", ""))  # noqa: T201
    print(path)  # noqa: T201
