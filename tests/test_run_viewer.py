"""The run viewer (report/index.html, collabloop/report/html.py) on a small real run, in a real headless Chromium.

The run is test_report.py's hand-made run of real records, its pairs made by the pairs stage's own
`make_pair`, with replies holding markup injected: the page must show them as text and run none of them.
The browser tests skip, saying why, when no Chromium is installed (setup.sh installs it where it can).
"""

from __future__ import annotations

import html
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from collabloop.jsonl import read_records
from collabloop.records import EvalConversation, Rewarded, Task
from collabloop.report import collect, write_report
from collabloop.report.html import js_literal
from collabloop.report.viewer_data import viewer_data
from dpo_iteration.pairing import make_pair
from tests.cdp import BINARIES, Chromium, find_chromium
from tests.conftest import REPO, write_jsonl
from tests.test_report import PNG_SIGNATURE, _rewarded, _write_conversations, write_run

DEMO_RUN = REPO / "data" / "runs" / "demo"
# "Thousands of contexts open in a few seconds" (the viewer's data comes in chunks, its list in pages).
BIG_RUN_CONTEXTS = 3000
SCRIPT = "<script>window.__pwned=1</script>"
IMAGE = "<img src=x onerror=\"window.__pwned=2\">"
HOSTILE = f"Here is my answer: {SCRIPT} and {IMAGE}\u2028(a line separator) </script><!--"
# The markup must reach the page as text: never run, and no element made from it.
NOT_RUN = ("typeof window.__pwned === 'undefined' && "
           "document.querySelectorAll('#detail script, #detail img, #list script, #list img').length === 0")


def _inject(run: Path) -> None:
    """Hostile replies in a candidate, a future and an evaluation conversation; tasks with metadata; real pairs."""
    for i in (1, 2):
        path = run / f"iter_{i}" / "rewards.jsonl"
        records = read_records(path, Rewarded)
        first = records[0]  # t1/turn0: rewards 1.9, 0.9, 1.1 -> chosen 0, rejected 1 (max_min)
        first.responses[1] = HOSTILE
        first.futures[1][0] = {"messages": [{"role": "user", "content": IMAGE},
                                            {"role": "assistant", "content": SCRIPT}],
                               "terminated": False, "error": None}
        first.futures[2][1] = {"messages": [], "terminated": False, "error": "simulator failed at turn 1: timeout"}
        write_jsonl(path, [r.to_dict() for r in records])
        pairs = [p for r in records if (p := make_pair(r, 0.0, Counter())) is not None]
        write_jsonl(run / f"iter_{i}" / "pairs.jsonl", [p.to_dict() for p in pairs])
    conversations = run / "iter_2" / "eval" / "conversations.jsonl"
    records = read_records(conversations, EvalConversation)
    records[2].messages[1]["content"] = HOSTILE
    write_jsonl(conversations, [r.to_dict() for r in records])
    tasks = [Task(id=f"t{k}", task="math", goal=f"{k} + 1", reference=str(k + 1),
                  metadata={"underspecified": k % 2 == 1}) for k in range(8)]
    tasks_path = write_jsonl(run / "tasks.jsonl", [t.to_dict() for t in tasks])
    for i in (0, 2):
        summary_path = run / f"iter_{i}" / "eval" / "summary.json"
        summary = json.loads(summary_path.read_text())
        summary["tasks_path"] = str(tasks_path)
        summary_path.write_text(json.dumps(summary, indent=2))


@pytest.fixture
def viewer_run(tmp_path) -> Path:
    """test_report.py's run (iterations 1 and 2 trained, 0 and 2 evaluated) with hostile replies injected."""
    run = write_run(tmp_path / "runs" / "tiny")
    _inject(run)
    return run


def _viewer_files(report_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(report_dir)): p.read_bytes()
            for p in sorted(report_dir.rglob("*")) if p.is_file() and p.suffix in (".html", ".js", ".css")}


def test_js_literal_cannot_end_a_script_and_reads_back():
    value = {"reply": HOSTILE, "n": 1.5, "none": None}
    text = js_literal(value)
    for unsafe in ("<", ">", "&", "\u2028", "\u2029"):
        assert unsafe not in text
    assert json.loads(text) == value


def test_viewer_data_pairs_samples_of_an_opening_across_iterations(viewer_run):
    _write_conversations(viewer_run / "iter_0" / "eval", {"accuracy": {"t0": [0.0, 1.0], "t1": [1.0, 1.0]}})
    _write_conversations(viewer_run / "iter_2" / "eval", {"accuracy": {"t0": [1.0, 1.0], "t1": [1.0, None]}})
    evaluation = viewer_data(collect(viewer_run), viewer_run)["evaluation"]
    assert (evaluation["iterations"], evaluation["metric"]) == ([0, 2], "accuracy")
    rows = {r["id"]: r for r in evaluation["rows"]}
    assert rows["t0"]["means"] == {0: 0.5, 2: 1.0} and rows["t0"]["outcome"] == "better"
    assert rows["t1"]["diffs"] == {2: 0.0} and rows["t1"]["outcome"] == "unchanged"  # a failed value is left out
    t0 = next(d for d in evaluation["details"] if d["id"] == "t0")
    assert [c["id"] for c in t0["conversations"][2]] == ["t0/sample0", "t0/sample1"]


def test_viewer_files_are_safe_deterministic_and_not_stale(viewer_run, tmp_path):
    stale = tmp_path / "a" / "viewer" / "iter_9_0.js"
    stale.parent.mkdir(parents=True)
    stale.write_text("window.RV_CHUNKS = {};\n")
    write_report(viewer_run, tmp_path / "a")
    write_report(viewer_run, tmp_path / "b")
    files = _viewer_files(tmp_path / "a")
    assert files == _viewer_files(tmp_path / "b"), "the same run must give the same viewer, byte for byte"
    assert not stale.exists(), "a chunk no run row names any more is left behind"
    assert set(files) == {"index.html", "viewer/viewer.js", "viewer/viewer.css", "viewer/index.js",
                          "viewer/iter_1_0.js", "viewer/iter_2_0.js", "viewer/eval_0.js"}
    page = files["index.html"].decode()
    report = (tmp_path / "a" / "report.md").read_text()
    headline = next(line for line in report.splitlines() if line.startswith("**Headline:**"))
    assert "<strong>Headline:</strong>" + html.escape(headline.removeprefix("**Headline:**")) in page
    for name in ("reward_distribution.png", "pair_margins.png", "eval_metrics.png"):
        assert f'<img src="{name}"' in page and (tmp_path / "a" / name).is_file()
    assert "http:" not in page and "https:" not in page, "the page must load nothing from the network"
    for name, data in files.items():
        if name.startswith("viewer/") and name not in ("viewer/viewer.js", "viewer/viewer.css"):
            text = data.decode()
            assert "<" not in text and "\u2028" not in text, f"{name}: markup or a line separator unescaped"
    chunk = files["viewer/iter_1_0.js"].decode()
    assert "\\u003cscript\\u003ewindow.__pwned=1\\u003c/script\\u003e" in chunk
    assert "innerHTML" not in files["viewer/viewer.js"].decode()


def _choose(page: Chromium, field: str, value: str) -> None:
    """Pick `value` in the filter of `field` as a user would (the page listens for change events)."""
    page.evaluate(f"(s => {{ s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change')); }})"
                  f"(document.querySelector('select[data-filter={json.dumps(field)}]'))")


needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason=f"no Chromium on PATH (looked for {', '.join(BINARIES)}); setup.sh installs it with apt-get where it can")


@needs_chromium
def test_viewer_in_chromium(viewer_run, tmp_path):
    report_dir = tmp_path / "report"
    write_report(viewer_run, report_dir)
    started = time.monotonic()
    with Chromium.start(find_chromium(), tmp_path / "browser") as page:
        page.open((report_dir / "index.html").as_uri())
        page.wait_until("document.querySelectorAll('#list li').length === 3")
        assert page.errors() == []
        assert "Headline:" in page.evaluate("document.getElementById('headline').textContent")
        page.evaluate("document.getElementById('plots').open = true")
        page.wait_until("Array.from(document.querySelectorAll('#plots img')).every(i => i.complete)")
        plots = page.evaluate("Array.from(document.querySelectorAll('#plots img')).map(i => i.naturalWidth)")
        assert len(plots) >= 4 and all(width >= 300 for width in plots), plots
        views = page.evaluate("Array.from(document.querySelectorAll('#views button')).map(b => b.textContent)")
        assert views == ["Training iteration 1", "Training iteration 2", "Evaluation: iteration 0 vs 2"]

        # A context: candidates best first, the pair marked, a candidate's futures opened and read.
        page.evaluate("document.querySelector('#list li[data-id=\"t1/turn0\"]').click()")
        page.wait_until("document.querySelectorAll('#detail .candidate').length === 3")
        ranked = page.evaluate("Array.from(document.querySelectorAll('#detail .candidate')).map(c => c.dataset.k)")
        assert ranked == ["0", "2", "1"]  # rewards 1.9, 1.1, 0.9
        assert page.evaluate("document.querySelector('.candidate[data-k=\"0\"]').classList.contains('chosen')")
        rejected = page.evaluate("document.querySelector('.candidate.rejected').textContent")
        assert "candidate 1" in rejected and "margin 1" in rejected and HOSTILE.split("\u2028")[0] in rejected
        assert "Pair: chosen candidate 0 (reward 1.9) over candidate 1 (reward 0.9), margin 1." in page.evaluate(
            "document.querySelector('#detail .pair').textContent")
        page.evaluate("document.querySelector('.candidate[data-k=\"1\"] details.futures summary').click()")
        page.wait_until("document.querySelectorAll('.candidate[data-k=\"1\"] .future').length === 2")
        future = page.evaluate("document.querySelector('.candidate[data-k=\"1\"] .future[data-s=\"0\"]').textContent")
        assert f"simulated user{IMAGE}" in future and f"policy{SCRIPT}" in future and "turn limit" in future
        page.evaluate("document.querySelector('.candidate[data-k=\"2\"] details.futures summary').click()")
        page.wait_until("document.querySelector('.candidate[data-k=\"2\"] .future[data-s=\"1\"]')")
        failed = page.evaluate("document.querySelector('.candidate[data-k=\"2\"] .future[data-s=\"1\"]').textContent")
        assert "failed" in failed and "simulator failed at turn 1: timeout" in failed
        assert page.evaluate(NOT_RUN)

        # Held-out openings: filters, search, and one opening played by iteration 0 and 2 side by side.
        page.evaluate("document.querySelector('#views button[data-view=\"eval\"]').click()")
        page.wait_until("document.querySelectorAll('#list li').length === 8")
        _choose(page, "underspecified", "true")
        assert page.evaluate("Array.from(document.querySelectorAll('#list li')).map(li => li.dataset.id)") == [
            "e1", "e3", "e5", "e7"]
        _choose(page, "outcome", "better")
        assert page.evaluate("Array.from(document.querySelectorAll('#list li')).map(li => li.dataset.id)") == [
            "e3", "e5"]  # iteration 2 solves t2..t7, iteration 0 only t7
        _choose(page, "underspecified", "")
        page.evaluate("(q => { q.value = 'e2'; q.dispatchEvent(new Event('input')); })"
                      "(document.getElementById('search'))")
        page.wait_until("document.querySelectorAll('#list li').length === 1")
        page.evaluate("document.querySelector('#list li[data-id=\"e2\"]').click()")
        page.wait_until("document.querySelectorAll('#detail .side-by-side .conversation').length === 2")
        heads = page.evaluate("Array.from(document.querySelectorAll('.iter-head')).map(h => h.textContent)")
        assert heads[0].startswith("iteration 0 (initial model) · accuracy 0")
        assert heads[1].startswith("iteration 2 · accuracy 1 · +1 vs iteration 0") and heads[1].endswith("better")
        later = page.evaluate("document.querySelectorAll('.side-by-side .conversation')[1].textContent")
        assert SCRIPT in later and IMAGE in later
        assert page.evaluate(NOT_RUN)
        assert page.errors() == []
        shot = page.screenshot(tmp_path / "viewer.png")
    assert shot.read_bytes()[:8] == PNG_SIGNATURE and shot.stat().st_size > 10_000
    assert time.monotonic() - started < 60


@needs_chromium
def test_viewer_on_demo_run(tmp_path):
    if not any(DEMO_RUN.glob("iter_*")):
        pytest.skip(f"{DEMO_RUN} not present (data/runs is not in git; run `bash run_loop.sh` to make it)")
    write_report(DEMO_RUN, tmp_path / "report")
    with Chromium.start(find_chromium(), tmp_path / "browser") as page:
        page.open((tmp_path / "report" / "index.html").as_uri())
        page.evaluate("document.querySelector('#list li').click()")
        page.wait_until("document.querySelector('#detail .candidate')")
        page.evaluate("document.querySelector('#views button[data-view=\"eval\"]').click()")
        page.evaluate("document.querySelector('#list li').click()")
        page.wait_until("document.querySelector('#detail .side-by-side .conversation')")
        assert page.errors() == []


@needs_chromium
def test_viewer_of_thousands_of_contexts_opens_in_seconds(tmp_path):
    run = tmp_path / "runs" / "big"
    records = [Rewarded.from_dict(_rewarded(f"t{n}/turn0", [1.9, 0.9, 1.1], [1.0, 0.0, 0.0]), f"record {n}")
               for n in range(BIG_RUN_CONTEXTS)]
    write_jsonl(run / "iter_1" / "rewards.jsonl", [r.to_dict() for r in records])
    write_jsonl(run / "iter_1" / "pairs.jsonl", [make_pair(r, 0.0, Counter()).to_dict() for r in records])
    write_report(run, tmp_path / "report")
    assert len(list((tmp_path / "report" / "viewer").glob("iter_1_*.js"))) == BIG_RUN_CONTEXTS // 100
    with Chromium.start(find_chromium(), tmp_path / "browser") as page:
        started = time.monotonic()
        page.open((tmp_path / "report" / "index.html").as_uri())
        page.wait_until("document.querySelectorAll('#list li').length === 50")
        shown = time.monotonic() - started
        assert page.evaluate("document.querySelector('#pager .count').textContent") == (
            f"1–50 of {BIG_RUN_CONTEXTS} ({BIG_RUN_CONTEXTS} in all)")
        last = f"t{BIG_RUN_CONTEXTS - 1}/turn0"
        page.evaluate(f"(q => {{ q.value = '{last}'; q.dispatchEvent(new Event('input')); }})"
                      "(document.getElementById('search'))")
        page.evaluate("document.querySelector('#list li').click()")
        page.wait_until("document.querySelectorAll('#detail .candidate').length === 3")
        opened = time.monotonic() - started
        assert page.errors() == []
    assert shown < 5 and opened < 8, f"list shown after {shown:.1f} s, the last context open after {opened:.1f} s"
