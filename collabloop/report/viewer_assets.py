"""The run viewer's script and style (report/viewer/viewer.js and viewer.css), kept in Python so that they
travel with the package however it is installed (the packages list names modules, not data files).

The script writes every text of the run with textContent or createTextNode, never as markup.
"""

VIEWER_JS = r""""use strict";
// The run viewer (collabloop/report/html.py). Every text from the run is written with textContent or
// createTextNode: a model reply holding markup is shown as that markup, never parsed.
(function () {
  const INDEX = window.RV_INDEX;
  const PAGE_SIZE = 50;
  const ROLE_LABEL = {user: "simulated user", assistant: "policy", system: "system"};
  const OUTCOMES = ["better", "worse", "unchanged", "n/a"];
  const state = {view: null, page: 0, search: "", kind: "", outcome: "", fields: {}, selected: null};
  const pending = {};

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function add(parent, ...children) {
    for (const child of children) if (child) parent.appendChild(child);
    return parent;
  }
  function fmt(x, signed) {
    if (x === null || x === undefined) return "—";
    const s = String(Math.round(x * 1000) / 1000);
    return signed && x > 0 ? "+" + s : s;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  function loadChunk(name) {
    if (window.RV_CHUNKS && window.RV_CHUNKS[name]) return Promise.resolve(window.RV_CHUNKS[name]);
    if (!pending[name]) {
      pending[name] = new Promise(function (resolve, reject) {
        const script = document.createElement("script");
        script.src = "viewer/" + name + ".js";
        script.onload = function () {
          const chunk = (window.RV_CHUNKS || {})[name];
          if (chunk) resolve(chunk); else reject(new Error("viewer/" + name + ".js holds no data"));
        };
        script.onerror = function () {
          delete pending[name];
          reject(new Error("could not load viewer/" + name + ".js (rerun the report to write it)"));
        };
        document.head.appendChild(script);
      });
    }
    return pending[name];
  }

  // ---- views, filters and the list ----
  function views() {
    const out = INDEX.training.map(function (t) {
      return {key: "train/" + t.iteration, label: "Training iteration " + t.iteration, rows: t.rows, training: t};
    });
    if (INDEX.evaluation) {
      const e = INDEX.evaluation;
      const label = e.iterations.length > 1 ?
        "Evaluation: iteration " + e.iterations.join(" vs ") : "Evaluation: iteration " + e.base;
      out.push({key: "eval", label: label, rows: e.rows, evaluation: e});
    }
    return out;
  }
  const VIEWS = views();
  function currentView() { return VIEWS.find(function (v) { return v.key === state.view; }); }

  function taskOf(row) { return INDEX.tasks[row.task_id] || {kind: "", metadata: {}}; }
  function matches(row, view) {
    const task = taskOf(row);
    if (state.search) {
      const needle = state.search.toLowerCase();
      if (row.id.toLowerCase().indexOf(needle) < 0 && row.task_id.toLowerCase().indexOf(needle) < 0) return false;
    }
    if (state.kind && task.kind !== state.kind) return false;
    for (const field in state.fields) {
      if (state.fields[field] && task.metadata[field] !== state.fields[field]) return false;
    }
    return !(view.evaluation && state.outcome && row.outcome !== state.outcome);
  }

  function select(options, value, onChange, label) {
    const box = el("label", "filter", label + " ");
    const menu = el("select");
    menu.setAttribute("data-filter", label);
    for (const value of [""].concat(options)) {
      const option = el("option", null, value === "" ? "any" : value);
      option.value = value;
      add(menu, option);
    }
    menu.value = value || "";
    menu.addEventListener("change", function () { onChange(menu.value); state.page = 0; renderList(); });
    return add(box, menu);
  }

  function renderViews() {
    const nav = clear(document.getElementById("views"));
    for (const view of VIEWS) {
      const button = el("button", view.key === state.view ? "view active" : "view", view.label);
      button.setAttribute("data-view", view.key);
      button.addEventListener("click", function () { state.view = view.key; state.page = 0; renderAll(); });
      add(nav, button);
    }
    if (!VIEWS.length) add(nav, el("p", "muted", "This run has no candidates file and no evaluation yet."));
  }

  function renderFilters() {
    const box = clear(document.getElementById("filters"));
    const view = currentView();
    if (!view) return;
    const search = el("input");
    search.type = "search";
    search.id = "search";
    search.placeholder = "search by context, opening or task id";
    search.value = state.search;
    search.addEventListener("input", function () {
      state.search = search.value.trim();
      state.page = 0;
      renderList();
    });
    add(box, search);
    const kinds = Array.from(new Set(Object.values(INDEX.tasks).map(function (t) { return t.kind; }))).sort();
    if (kinds.length) add(box, select(kinds, state.kind, function (v) { state.kind = v; }, "task"));
    for (const field of Object.keys(INDEX.filters)) {
      add(box, select(INDEX.filters[field], state.fields[field], function (v) { state.fields[field] = v; }, field));
    }
    if (view.evaluation && view.evaluation.iterations.length > 1) {
      add(box, select(OUTCOMES, state.outcome, function (v) { state.outcome = v; }, "outcome"));
    }
    for (const note of INDEX.notes) add(box, el("p", "note", note));
  }

  function rowLine(row, view) {
    if (view.training) {
      return "best " + fmt(row.best) + (row.margin === null ? " · no pair" : " · margin " + fmt(row.margin)) +
        " · " + row.candidates + " candidates" + (row.failures ? " · " + row.failures + " failed" : "");
    }
    const e = view.evaluation;
    const parts = e.iterations.map(function (i) { return fmt(row.means[i]); });
    let line = e.metric + " " + parts.join(" → ");
    if (e.iterations.length > 1) line += " (" + fmt(row.diffs[e.last], true) + ", " + row.outcome + ")";
    return line;
  }

  function renderList() {
    const view = currentView();
    const list = clear(document.getElementById("list"));
    const pager = clear(document.getElementById("pager"));
    if (!view) return;
    const rows = view.rows.filter(function (row) { return matches(row, view); });
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    const first = state.page * PAGE_SIZE;
    const shown = rows.slice(first, first + PAGE_SIZE);
    const prev = el("button", null, "‹ previous");
    prev.disabled = state.page === 0;
    prev.addEventListener("click", function () { state.page -= 1; renderList(); });
    const next = el("button", null, "next ›");
    next.disabled = state.page >= pages - 1;
    next.addEventListener("click", function () { state.page += 1; renderList(); });
    const what = rows.length ? (first + 1) + "–" + (first + shown.length) + " of " + rows.length : "none";
    add(pager, prev, el("span", "count", what + " (" + view.rows.length + " in all)"), next);
    for (const row of shown) {
      const item = el("li", row.id === state.selected ? "row selected" : "row");
      item.setAttribute("data-id", row.id);
      if (row.outcome) item.classList.add("outcome-" + row.outcome.replace("/", ""));
      add(item, el("div", "row-id", row.id), el("div", "row-line", rowLine(row, view)));
      item.addEventListener("click", function () { openRow(view, row); });
      add(list, item);
    }
  }

  function renderAll() { renderViews(); renderFilters(); renderList(); }

  // ---- the detail pane ----
  function messages(turns, none) {
    const box = el("div", "messages");
    for (const turn of turns) {
      const message = el("div", "msg " + turn[0]);
      add(message, el("div", "role", ROLE_LABEL[turn[0]] || turn[0]));
      add(message, el("div", turn[1] ? "text" : "text empty", turn[1] || "(empty)"));
      add(box, message);
    }
    if (!turns.length) add(box, el("p", "muted", none || "(no turns)"));
    return box;
  }
  function badge(text, cls) { return el("span", "badge " + cls, text); }
  function outcomeBadge(outcome) { return badge(outcome, "o-" + outcome.replace(/ /g, "-")); }

  function taskLine(row) {
    const task = taskOf(row);
    const meta = Object.keys(task.metadata).map(function (f) { return f + ": " + task.metadata[f]; });
    return el("p", "muted", "task " + row.task_id + (task.kind ? " (" + task.kind + ")" : "") +
      (meta.length ? " · " + meta.join(" · ") : ""));
  }

  function openRow(view, row) {
    state.selected = row.id;
    for (const item of document.querySelectorAll("#list li")) {
      item.classList.toggle("selected", item.getAttribute("data-id") === row.id);
    }
    const pane = clear(document.getElementById("detail"));
    add(pane, el("p", "muted loading", "loading " + row.chunk + " …"));
    loadChunk(row.chunk).then(function (chunk) {
      clear(pane);
      const detail = chunk[row.id];
      if (view.training) renderContext(pane, view.training, row, detail);
      else renderOpening(pane, view.evaluation, row, detail);
    }, function (error) {
      clear(pane);
      add(pane, el("p", "note", error.message));
    });
  }

  function pairText(pair) {
    if (!pair) return "No pair was built from this context (see the pairs stage's counts for why).";
    function name(k) { return k === null ? "a reply matching no candidate" : "candidate " + k; }
    return "Pair: chosen " + name(pair.chosen) + " (reward " + fmt(pair.chosen_reward) + ") over " +
      name(pair.rejected) + " (reward " + fmt(pair.rejected_reward) + "), margin " + fmt(pair.margin) + ".";
  }

  function metricTable(metrics) {
    const names = Object.keys(metrics);
    if (!names.length) return null;
    const table = el("table", "metrics");
    const head = add(el("tr"), el("th", null, "metric"), el("th", null, "mean"), el("th", null, "per future"));
    add(table, head);
    for (const name of names) {
      const entry = metrics[name];
      const values = entry.values.map(function (v, s) {
        return entry.errors[s] ? "failed: " + entry.errors[s] : fmt(v);
      });
      const failed = entry.errors.some(function (e) { return e; });
      add(table, add(el("tr", failed ? "failed" : null), el("td", null, name), el("td", null, fmt(entry.mean)),
        el("td", null, values.join(" | "))));
    }
    return table;
  }

  function renderFutures(box, candidate) {
    candidate.futures.forEach(function (future, s) {
      const card = el("div", "future");
      card.setAttribute("data-s", String(s));
      const head = add(el("div", "future-head"),
        el("span", null, "future " + s + " · reward " + fmt(future.reward) + " "), outcomeBadge(future.outcome));
      for (const pair of candidate.future_pairs) {
        if (pair.chosen === s) add(head, badge("chosen reply (margin " + fmt(pair.margin) + ")", "chosen"));
        if (pair.rejected === s) add(head, badge("rejected reply (margin " + fmt(pair.margin) + ")", "rejected"));
      }
      add(card, head);
      if (future.error) add(card, el("p", "note", "error: " + future.error));
      add(card, messages(future.turns, future.outcome === "ended on answer" ?
        "(no further turns: the conversation ended on this candidate's answer)" : "(no turns)"));
      add(box, card);
    });
  }

  function renderCandidate(candidate, rank, pair) {
    const role = !pair ? "" : pair.chosen === candidate.k ? "chosen" : pair.rejected === candidate.k ? "rejected" : "";
    const card = el("div", "candidate " + role);
    card.setAttribute("data-k", String(candidate.k));
    const head = add(el("div", "cand-head"),
      el("strong", null, "#" + rank + " · candidate " + candidate.k + " · reward " + fmt(candidate.reward)));
    if (role) add(head, badge(role + " · margin " + fmt(pair.margin), role));
    for (const p of candidate.future_pairs) {
      add(head, badge("its futures' replies paired · margin " + fmt(p.margin), "future-pair"));
    }
    add(card, head, metricTable(candidate.metrics), messages([["assistant", candidate.text]]));
    if (candidate.futures) {
      const futures = el("details", "futures");
      const counts = {};
      for (const f of candidate.futures) counts[f.outcome] = (counts[f.outcome] || 0) + 1;
      const summary = Object.keys(counts).sort().map(function (o) { return counts[o] + " " + o; }).join(", ");
      const title = candidate.futures.length + " simulated futures" + (summary ? ": " + summary : "");
      add(futures, el("summary", null, title));
      const body = el("div", "future-list");
      add(futures, body);
      // Futures are drawn when first opened: a page of many contexts stays light.
      futures.addEventListener("toggle", function () {
        if (futures.open && !body.firstChild) renderFutures(body, candidate);
      });
      add(card, futures);
    }
    return card;
  }

  function renderContext(pane, training, row, detail) {
    add(pane, el("h2", null, detail.id), taskLine(row),
      el("p", "muted", "turn " + detail.turn + " · from " + training.source +
        (training.pairs_source ? " and " + training.pairs_source : "")));
    add(pane, el("h3", null, "Context"), messages(detail.prompt));
    add(pane, el("p", detail.pair ? "pair" : "pair none", pairText(detail.pair)));
    const ranked = detail.candidates.slice().sort(function (a, b) {
      if (a.reward === b.reward) return a.k - b.k;
      if (a.reward === null) return 1;
      if (b.reward === null) return -1;
      return b.reward - a.reward;
    });
    add(pane, el("h3", null, ranked.length + " candidates, best reward first"));
    ranked.forEach(function (candidate, rank) { add(pane, renderCandidate(candidate, rank + 1, detail.pair)); });
  }

  function conversationCard(conversation) {
    const card = el("div", "conversation");
    card.setAttribute("data-id", conversation.id);
    const metrics = Object.keys(conversation.metrics).map(function (m) {
      return m + " " + (conversation.metric_errors[m] ? "failed" : fmt(conversation.metrics[m]));
    });
    const head = add(el("div", "conv-head"), el("span", null, conversation.id + " "),
      outcomeBadge(conversation.outcome));
    add(card, head, el("p", "muted", metrics.join(" · ")));
    for (const name of Object.keys(conversation.metric_errors)) {
      add(card, el("p", "note", name + " failed: " + conversation.metric_errors[name]));
    }
    if (conversation.error) add(card, el("p", "note", "error: " + conversation.error));
    return add(card, messages(conversation.turns));
  }

  function renderOpening(pane, evaluation, row, detail) {
    add(pane, el("h2", null, detail.id), taskLine(row));
    const grid = el("div", "side-by-side");
    grid.style.gridTemplateColumns = "repeat(" + evaluation.iterations.length + ", minmax(0, 1fr))";
    for (const i of evaluation.iterations) {
      const head = el("div", "iter-head");
      head.setAttribute("data-iteration", String(i));
      let text = "iteration " + i + (i === 0 ? " (initial model)" : "") + " · " + evaluation.metric + " " +
        fmt(row.means[i]);
      if (i !== evaluation.base) text += " · " + fmt(row.diffs[i], true) + " vs iteration " + evaluation.base;
      add(head, el("strong", null, text));
      if (row.outcomes[i]) add(head, badge(row.outcomes[i], "outcome-" + row.outcomes[i].replace("/", "")));
      add(grid, head);
    }
    const samples = Math.max.apply(null, evaluation.iterations.map(function (i) {
      return (detail.conversations[i] || []).length;
    }));
    for (let j = 0; j < samples; j++) {
      for (const i of evaluation.iterations) {
        const conversation = (detail.conversations[i] || [])[j];
        add(grid, conversation ? conversationCard(conversation) : el("p", "muted", "(no conversation)"));
      }
    }
    add(pane, grid);
  }

  // ---- start ----
  if (!INDEX) {
    add(document.getElementById("detail"), el("p", "note", "viewer/index.js is missing: rerun the report."));
    return;
  }
  state.view = VIEWS.length ? VIEWS[0].key : null;
  renderAll();
})();
"""

VIEWER_CSS = r"""body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2125;
  background: #f6f7f9; }
header { padding: 10px 18px; background: #fff; border-bottom: 1px solid #d6d9de; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 0 0 4px; word-break: break-all; }
h3 { font-size: 15px; margin: 14px 0 6px; }
#headline { margin: 4px 0; }
.muted { color: #5f6670; margin: 2px 0; }
.note { color: #8a4b00; background: #fff6e5; padding: 4px 8px; border-radius: 4px; margin: 4px 0; }
#plots figure { display: inline-block; margin: 6px; vertical-align: top; }
#plots img { max-width: 460px; border: 1px solid #d6d9de; background: #fff; }
#plots figcaption { font-size: 12px; color: #5f6670; }
#views { margin-top: 8px; }
button { font: inherit; padding: 3px 10px; border: 1px solid #b8bec6; border-radius: 4px; background: #fff;
  cursor: pointer; }
button:disabled { color: #aaa; cursor: default; }
button.view { margin-right: 6px; }
button.view.active { background: #1d4ed8; color: #fff; border-color: #1d4ed8; }
main { display: flex; align-items: flex-start; }
#side { width: 360px; flex: none; padding: 10px; border-right: 1px solid #d6d9de; background: #fff;
  position: sticky; top: 0; max-height: 100vh; overflow: auto; box-sizing: border-box; }
#search { width: 100%; box-sizing: border-box; padding: 4px 6px; margin-bottom: 6px; }
.filter { display: inline-block; margin: 0 8px 6px 0; font-size: 13px; }
#pager { display: flex; justify-content: space-between; align-items: center; margin: 6px 0; font-size: 13px; }
#list { list-style: none; margin: 0; padding: 0; }
.row { padding: 5px 6px; border-bottom: 1px solid #eceef1; cursor: pointer; }
.row:hover { background: #f0f4ff; }
.row.selected { background: #dbe6ff; }
.row-id { font-family: ui-monospace, monospace; font-size: 12.5px; word-break: break-all; }
.row-line { font-size: 12px; color: #5f6670; }
.row.outcome-better .row-line { color: #1a7f37; }
.row.outcome-worse .row-line { color: #b42318; }
#detail { flex: 1; min-width: 0; padding: 12px 18px; }
.messages { display: flex; flex-direction: column; gap: 6px; margin: 6px 0; }
.msg { border-radius: 6px; padding: 5px 9px; max-width: 92%; border: 1px solid transparent; }
.msg.user { background: #eef1f5; border-color: #d5dbe3; align-self: flex-start; }
.msg.assistant { background: #e8f0fe; border-color: #b7cdf7; align-self: flex-end; }
.msg.system { background: #f3f0e8; border-color: #ddd5bf; }
.role { font-size: 11px; font-weight: 600; text-transform: uppercase; letter-spacing: .04em; color: #5f6670; }
.msg.assistant .role { color: #1d4ed8; }
.text { white-space: pre-wrap; word-break: break-word; }
.text.empty { font-style: italic; color: #8b929b; }
.candidate { background: #fff; border: 1px solid #d6d9de; border-left: 5px solid #d6d9de; border-radius: 6px;
  padding: 8px 12px; margin: 8px 0; }
.candidate.chosen { border-left-color: #1a7f37; background: #f3fbf5; }
.candidate.rejected { border-left-color: #b42318; background: #fdf4f3; }
.badge { display: inline-block; font-size: 12px; padding: 0 7px; border-radius: 10px; margin-left: 6px;
  background: #eceef1; color: #39414a; }
.badge.chosen, .badge.outcome-better { background: #1a7f37; color: #fff; }
.badge.rejected, .badge.outcome-worse { background: #b42318; color: #fff; }
.badge.o-failed { background: #b42318; color: #fff; }
.badge.o-ended-on-answer { background: #d7f0dd; color: #135c29; }
.badge.o-user-ended { background: #e4e7ff; color: #2c3596; }
.badge.o-turn-limit { background: #fff1c2; color: #6b4d00; }
.pair { font-weight: 600; color: #1a7f37; }
.pair.none { color: #5f6670; font-weight: normal; }
table.metrics { border-collapse: collapse; font-size: 12.5px; margin: 4px 0; }
table.metrics td, table.metrics th { border: 1px solid #e1e4e8; padding: 1px 6px; text-align: left; }
table.metrics tr.failed td { color: #b42318; }
details.futures > summary { cursor: pointer; color: #1d4ed8; margin-top: 4px; }
.future { border: 1px dashed #c7ccd3; border-radius: 6px; padding: 6px 10px; margin: 6px 0 6px 18px;
  background: #fcfcfd; }
.future-head, .conv-head, .cand-head { font-size: 13px; }
.side-by-side { display: grid; gap: 10px; align-items: start; }
.iter-head { position: sticky; top: 0; background: #f6f7f9; padding: 4px 0; border-bottom: 2px solid #1d4ed8; }
.conversation { background: #fff; border: 1px solid #d6d9de; border-radius: 6px; padding: 6px 10px; }
"""
