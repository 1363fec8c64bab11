"use strict";
// Where the page's data comes from: the server (range queries as the view changes) or, in a
// page written by `fasttrace view --html`, the data embedded in it (no fetch at all).
// Both give the same objects: meta, function tables, call trees, and decoded slices/states.

const FT = {};

// A slices or states answer (fasttrace/viewer/_api.py): header (n, kind), float64 start[n],
// end[n], then int32 node, fid, depth, count (slices) or state (states); little-endian.
FT.decode = function (buf) {
  const dv = new DataView(buf);
  const n = dv.getUint32(0, true), kind = dv.getUint32(4, true);
  const f64 = (i) => new Float64Array(buf.slice(8 + i * 8 * n, 8 + (i + 1) * 8 * n));
  const base = 8 + 16 * n;
  const i32 = (i) => new Int32Array(buf.slice(base + i * 4 * n, base + (i + 1) * 4 * n));
  if (kind === 1) return { n, start: f64(0), end: f64(1), state: i32(0) };
  return { n, start: f64(0), end: f64(1), node: i32(0), fid: i32(1), depth: i32(2), count: i32(3) };
};

FT.fromBase64 = function (b64) {
  const s = atob(b64), out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out.buffer;
};

// Durations in the unit that suits them.
FT.dur = function (ns) {
  const a = Math.abs(ns);
  if (a >= 1e9) return (ns / 1e9).toPrecision(4) + " s";
  if (a >= 1e6) return (ns / 1e6).toPrecision(4) + " ms";
  if (a >= 1e3) return (ns / 1e3).toPrecision(4) + " µs";
  return Math.round(ns) + " ns";
};

FT.esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));

// The server: every answer is fetched (and the server caches nothing the page needs twice).
class ServerSource {
  constructor() { this.exported = null; }
  async json(path) {
    const r = await fetch(path);
    if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
    return r.json();
  }
  meta() { return this.json("api/meta"); }
  functions(p, tid) { return this.json(`api/functions?p=${p}&tid=${tid == null ? "" : tid}`); }
  tree(p, range) {
    return this.json(`api/tree?p=${p}` + (range ? `&t0=${Math.floor(range[0])}&t1=${Math.ceil(range[1])}` : ""));
  }
  async ranged(what, p, tid, t0, t1, res) {
    const r = await fetch(`api/${what}?p=${p}&tid=${tid}&t0=${Math.floor(t0)}&t1=${Math.ceil(t1)}&res=${Math.max(1, Math.floor(res))}`);
    if (!r.ok) throw new Error(what + ": " + r.status + " " + (await r.text()));
    return FT.decode(await r.arrayBuffer());
  }
  slices(p, tid, t0, t1, res) { return this.ranged("slices", p, tid, t0, t1, res); }
  states(p, tid, t0, t1, res) { return this.ranged("states", p, tid, t0, t1, res); }
  // one call exactly: its self and total time and its callees (folded by the server)
  call(p, tid, node, t0, t1) {
    return this.json(`api/call?p=${p}&tid=${tid}&node=${node}&t0=${Math.floor(t0)}&t1=${Math.ceil(t1)}`);
  }
}

// The embedded data: levels of detail per thread (the finest first); a query picks the finest
// level no finer than asked (or the finest there is), and cuts the range out of it.
class EmbeddedSource {
  constructor(data) {
    this.data = data;
    this.exported = data.export;
    this.levels = {};
  }
  async meta() { return this.data.meta; }
  async functions(p, tid) { return this.data.functions[p + ":" + (tid == null ? "" : tid)]; }
  async tree(p, range) {
    if (range) throw new Error("this exported page holds the whole trace's call tree only");
    return this.data.trees[p];
  }
  level(kind, p, tid, res) {
    const key = kind + p + ":" + tid;
    if (!this.levels[key]) {
      const lane = this.data.lanes[p + ":" + tid];
      this.levels[key] = (kind === "s" ? lane.levels : lane.states).map((l) => ({ res: l.res, d: byDepth(FT.decode(FT.fromBase64(l.data)), kind === "s") }));
    }
    const ls = this.levels[key];
    let pick = ls[0];
    for (const l of ls) if (l.res <= res) pick = l;
    return pick;
  }
  async slices(p, tid, t0, t1, res) { return cut(this.level("s", p, tid, res).d, t0, t1); }
  async states(p, tid, t0, t1, res) { return cut(this.level("t", p, tid, res).d, t0, t1); }
}

// Order entries by (depth, start): within a depth they never overlap, so both starts and ends
// are sorted and a range is two binary searches per depth.
function byDepth(d, slices) {
  const idx = Array.from({ length: d.n }, (_, i) => i);
  const depth = slices ? d.depth : new Int32Array(d.n);
  idx.sort((a, b) => depth[a] - depth[b] || d.start[a] - d.start[b]);
  const out = { n: d.n, groups: [] };
  for (const k of Object.keys(d)) if (k !== "n") out[k] = d[k].constructor.from(idx, (i) => d[k][i]);
  let g = 0;
  for (let i = 1; i <= d.n; i++) {
    if (i === d.n || (slices && out.depth[i] !== out.depth[g])) { out.groups.push([g, i]); g = i; }
  }
  return out;
}

function cut(d, t0, t1) {
  const pick = [];
  for (const [a, b] of d.groups) {
    let lo = a, hi = b;
    while (lo < hi) { const m = (lo + hi) >> 1; if (d.end[m] < t0) lo = m + 1; else hi = m; }
    for (let i = lo; i < b && d.start[i] <= t1; i++) pick.push(i);
  }
  const out = { n: pick.length };
  for (const k of Object.keys(d)) {
    if (k === "n" || k === "groups") continue;
    out[k] = d[k].constructor.from(pick, (i) => d[k][i]);
  }
  return out;
}

FT.source = function () {
  const el = document.getElementById("ft-data");
  return el ? new EmbeddedSource(JSON.parse(el.textContent)) : new ServerSource();
};
