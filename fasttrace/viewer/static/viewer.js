"use strict";
// The page: loads the metadata, builds the timeline and the profiles, and keeps
// window.fasttraceViewer.state up to date (what tests, and curious users, read).

const state = { ready: false, errors: [], lanes: [], t0: 0, t1: 0, search: { query: "", matches: [] },
  table: { scope: "", rows: [] }, flame: {}, blocking: { scope: "", rows: [] }, notes: [] };
window.fasttraceViewer = { state };
window.addEventListener("error", (e) => state.errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => state.errors.push(String(e.reason)));

async function main() {
  const source = FT.source(), meta = await source.meta();
  const $ = (id) => document.getElementById(id);
  const sampled = meta.processes.some((p) => p.mode === "sample");
  state.mode = sampled ? "sample" : "trace";
  $("title").textContent = meta.path + (source.exported ? " (exported page)" : "");
  document.title = "fasttrace view: " + meta.path;

  // ---- what is wrong with the trace, and what an exported page holds ----
  const notes = [...meta.problems];
  for (const p of meta.processes) {
    const who = meta.processes.length > 1 ? `process ${p.pid}: ` : "";
    if (p.truncated) notes.push(`${who}truncated: ${p.damage || "the file ends early"}; what is intact is shown`);
    if (p.dropped) notes.push(`${who}${p.dropped} events dropped (the red marks on the timeline)`);
    if (p.scope !== null && p.scope !== undefined) notes.push(`${who}a scoped trace (${p.scope || "no limit"}): only what is in scope was recorded`);
    for (const s of p.problems) notes.push(who + s);
    if (!p.threads.length) notes.push(`${who}nothing was recorded: the trace holds no ${p.mode === "sample" ? "samples" : "events"}`);
  }
  if (source.exported) {
    const e = source.exported, res = Object.values(e.finest);
    notes.push(e.full ? "exported page: every call is embedded (full detail)"
      : `exported page: the timeline is embedded at a resolution of ${FT.dur(Math.min(...res))} to ${FT.dur(Math.max(...res))} per slice to fit ${(e.budget / 1e6).toFixed(0)} MB; shorter calls are merged (open the trace with fasttrace view for full detail)`);
  }
  state.notes = notes;
  $("notes").innerHTML = notes.map((n) => `<div>${FT.esc(n)}</div>`).join("");

  // ---- tabs ----
  const tabs = {};
  const show = (name) => {
    for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("on", b.dataset.tab === name);
    for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== "tab-" + name;
    state.tab = name;
    if (tabs[name]) tabs[name]();
  };
  for (const b of document.querySelectorAll("#tabs button")) b.onclick = () => show(b.dataset.tab);

  // ---- timeline ----
  const tl = new Timeline($("timeline"), source, meta, state, (sel) => {
    const box = $("detail");
    state.selected = sel && { qualname: sel.info.f[0], start: sel.start, end: sel.end, callees: sel.callees,
      total_ns: sel.info.dur, self_ns: sel.info.self, approx: sel.info.approx };
    if (!sel) { box.hidden = true; return; }
    box.hidden = false;
    box.innerHTML = `<b>${FT.esc(sel.info.f[0])}</b> ${FT.esc(sel.info.f[1])}<br>total ${FT.dur(sel.info.dur)}, self ${sel.info.approx ? "≈ " : ""}${FT.dur(sel.info.self)}` +
      `<table><tr><th>callee</th><th class="num">calls</th><th class="num">time</th></tr>` +
      sel.callees.map((c) => `<tr><td>${FT.esc(c.qualname)}</td><td class="num">${c.calls}</td><td class="num">${c.merged ? "≈ " : ""}${FT.dur(c.ns)}</td></tr>`).join("") + "</table>";
  });
  tabs.timeline = () => tl.resize();

  // ---- scopes: all threads of a process, or one thread ----
  const scopes = [];
  meta.processes.forEach((p, i) => {
    const who = meta.processes.length > 1 ? `process ${p.pid} ` : "";
    scopes.push([`${i}:`, `${who}all threads`]);
    for (const t of p.threads) scopes.push([`${i}:${t.tid}`, `${who}thread ${t.tid} ${t.name}`]);
  });
  for (const sel of document.querySelectorAll(".scope")) sel.innerHTML = scopes.map(([v, l]) => `<option value="${v}">${FT.esc(l)}</option>`).join("");
  const parse = (v) => { const [p, t] = v.split(":"); return [+p, t === "" ? null : +t]; };

  // ---- functions table (CallTree.function_stats: what `fasttrace report` says) ----
  let sortKey = "self_ns", sortDesc = true;
  const fnTable = async () => {
    const scope = $("fn-scope").value, [p, tid] = parse(scope), proc = meta.processes[p];
    $("calls-head").textContent = proc.mode === "sample" ? "samples" : "calls";
    const rows = (await source.functions(p, tid)).map((r) => {
      const f = proc.functions[r.fid] || ["?", ""];
      return { qualname: f[0], where: f[1], self_ns: r.self_ns, total_ns: r.total_ns, calls: r.calls };
    });
    rows.sort((a, b) => {
      const x = a[sortKey], y = b[sortKey], c = typeof x === "string" ? x.localeCompare(y) : x - y;
      return sortDesc ? -c : c;
    });
    state.table = { scope, sort: sortKey, desc: sortDesc, rows };
    const q = state.search.query;
    $("fn-table").tBodies[0].innerHTML = rows.map((r) => `<tr${q && r.qualname.toLowerCase().includes(q) ? ' class="match"' : ""}><td>${FT.esc(r.qualname)}</td><td>${FT.esc(r.where)}</td>` +
      `<td class="num" title="${r.self_ns} ns">${FT.dur(r.self_ns)}</td><td class="num" title="${r.total_ns} ns">${FT.dur(r.total_ns)}</td><td class="num">${r.calls}</td></tr>`).join("");
  };
  for (const th of document.querySelectorAll("#fn-table th")) {
    th.onclick = () => { const k = th.dataset.key; sortDesc = k === sortKey ? !sortDesc : k !== "qualname" && k !== "where"; sortKey = k; fnTable(); };
  }
  $("fn-scope").onchange = fnTable;
  tabs.functions = fnTable;

  // ---- flame graph ----
  const flame = new Flame($("flame"), state);
  let flameRange = null;
  const trees = {};
  const treeOf = async (p, range) => {
    const key = p + (range ? `:${range[0]}:${range[1]}` : "");
    if (!trees[key]) trees[key] = await source.tree(p, range);
    return trees[key];
  };
  const flameDraw = async () => {
    const [p, tid] = parse($("flame-scope").value), proc = meta.processes[p];
    let range = flameRange && [Math.max(0, flameRange[0] - proc.offset_ns), Math.min(proc.end_ns, flameRange[1] - proc.offset_ns)];
    if (range && range[1] <= range[0]) range = null;
    let tree;
    try { tree = await treeOf(p, range); } catch (e) { $("flame-what").textContent = String(e.message); range = null; tree = await treeOf(p, null); }
    state.flame = { scope: $("flame-scope").value, range };
    $("flame-what").textContent = range ? `${FT.dur(range[0])} to ${FT.dur(range[1])}` : "whole trace";
    flame.query = state.search.query;
    flame.set(foldFrames(tree, tid));
  };
  $("flame-scope").onchange = flameDraw;
  $("flame-visible").onclick = () => { flameRange = [tl.t0, tl.t1]; flameDraw(); };
  $("flame-whole").onclick = () => { flameRange = null; flameDraw(); };
  if (source.exported) $("flame-visible").disabled = true; // window() needs the server
  tabs.flame = flameDraw;

  // ---- blocking ----
  const blockingDraw = async () => {
    const scope = $("blocking-scope").value, [p, tid] = parse(scope), proc = meta.processes[p];
    const isSampled = proc.mode === "sample";
    const rows = blocking(await treeOf(p, null), tid, isSampled);
    state.blocking = { scope, rows };
    $("blocking-note").textContent = isSampled
      ? "Sampled: time waiting inside a call (lock if the innermost frame is a lock wait such as acquire, wait or join; else I/O and sleep) and time waiting for the GIL, by stack."
      : "Traced: the time of C calls that block, by stack: I/O and sleep (recv, select, poll, sleep, read, write, accept, connect, send, waitpid, ...) and locks (acquire, wait, join, ...). A trace-mode trace does not record waiting for the GIL" + (meta.processes.some((x) => x.mode === "trace") ? "; a trace without C calls (--no-c-calls) shows nothing here." : ".");
    $("blocking-table").tBodies[0].innerHTML = rows.slice(0, 500).map((r) => `<tr><td>${r.category}</td><td class="num" title="${r.ns} ns">${FT.dur(r.ns)}</td><td>${FT.esc(r.stack.join(" → "))}</td></tr>`).join("");
  };
  $("blocking-scope").onchange = blockingDraw;
  tabs.blocking = blockingDraw;

  // ---- search: highlights matching functions everywhere ----
  let searchTimer = 0;
  $("search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => search($("search").value), 120);
  });
  const search = (text) => {
    const q = text.trim().toLowerCase();
    const names = new Set();
    if (q) for (const p of meta.processes) for (const f of Object.values(p.functions)) if (f[0].toLowerCase().includes(q)) names.add(f[0]);
    state.search = { query: q, matches: [...names].sort() };
    $("matches").textContent = q ? `${names.size} functions match` : "";
    tl.query = q; tl.redraw();
    flame.query = q; flame.draw();
    if (state.tab === "functions") fnTable();
  };

  Object.assign(window.fasttraceViewer, {
    setRange: (t0, t1) => tl.setRange(t0, t1), zoom: (f) => tl.zoom(f), search, show, timeline: tl,
  });
  show("timeline");
  state.ready = true;
}

main().catch((e) => { state.errors.push(String(e && e.stack || e)); document.getElementById("notes").textContent = "error: " + e; throw e; });
