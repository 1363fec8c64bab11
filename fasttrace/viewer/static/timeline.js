"use strict";
// The timeline: one lane per thread, grouped by process; a slice per call (or per run of
// samples sharing a frame) nested by depth.  Data comes in tiles: a tile is TILE_PX pixels of
// one thread at a power-of-two resolution, fetched once and kept (LRU); while a tile is on its
// way the frame is drawn from coarser tiles already here, so zoom and pan never wait for the
// network.

const TILE_PX = 512, ROW = 16, STATE_H = 6, PROC_H = 18, AXIS_H = 22, GUTTER = 150,
  MAX_ROWS = 48, CACHE_TILES = 3000, MAX_INFLIGHT = 6;
const STATE_COLORS = ["#2e9d3a", "#d62f2f", "#6b7fd1"]; // running, waiting for the GIL, in a call
const HIGHLIGHT = "#ffe600";

function hue(s) { // stable per module: FNV-1a of its name
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
  return (h >>> 0) % 360;
}

class Timeline {
  constructor(canvas, source, meta, state, onSelect) {
    this.c = canvas; this.ctx = canvas.getContext("2d");
    this.source = source; this.meta = meta; this.state = state; this.onSelect = onSelect;
    this.cache = new Map(); this.inflight = 0; this.queue = [];
    this.scrollY = 0; this.query = ""; this.selected = null; this.hits = [];
    this.colorCache = new Map();
    const ends = meta.processes.map((p) => p.offset_ns + p.end_ns);
    this.span = Math.max(1, ...ends);
    this.t0 = 0; this.t1 = this.span;
    this.lanes = [];
    let y = 0;
    meta.processes.forEach((p, pi) => {
      y += PROC_H;
      for (const t of p.threads) {
        const strip = p.mode === "sample" ? STATE_H + 2 : 0;
        const rows = Math.min(MAX_ROWS, t.max_depth + 1);
        this.lanes.push({ p: pi, proc: p, t, y, strip, h: strip + rows * ROW + 6, rows });
        y += strip + rows * ROW + 6;
      }
    });
    this.contentH = y;
    this.bind();
    this.resize();
    new ResizeObserver(() => this.resize()).observe(canvas);
  }

  resize() {
    const r = this.c.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    this.W = Math.max(200, r.width); this.H = Math.max(100, r.height);
    this.c.width = this.W * dpr; this.c.height = this.H * dpr;
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.redraw();
  }

  get plotW() { return this.W - GUTTER; }
  nsPerPx() { return (this.t1 - this.t0) / this.plotW; }
  xOf(t) { return GUTTER + (t - this.t0) / this.nsPerPx(); }
  tOf(x) { return this.t0 + (x - GUTTER) * this.nsPerPx(); }

  setRange(t0, t1) {
    const minSpan = 1000; // 1 µs across the screen: below that a pixel is < 1 ns
    if (t1 - t0 < minSpan) { const m = (t0 + t1) / 2; t0 = m - minSpan / 2; t1 = m + minSpan / 2; }
    const pad = (t1 - t0) * 0.5;
    if (t0 < -pad) { t1 -= t0 + pad; t0 = -pad; }
    if (t1 > this.span + pad) { t0 -= t1 - this.span - pad; t1 = this.span + pad; }
    this.t0 = Math.max(-pad, t0); this.t1 = t1;
    this.redraw();
  }
  zoom(factor, x) {
    const t = this.tOf(x == null ? GUTTER + this.plotW / 2 : x);
    this.setRange(t - (t - this.t0) * factor, t + (this.t1 - t) * factor);
  }
  pan(px) { const d = px * this.nsPerPx(); this.setRange(this.t0 + d, this.t1 + d); }
  scroll(dy) {
    this.scrollY = Math.max(0, Math.min(this.contentH - (this.H - AXIS_H) + 40, this.scrollY + dy));
    this.redraw();
  }

  bind() {
    const c = this.c;
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) this.pan(e.deltaX || e.deltaY);
      else this.zoom(Math.exp(e.deltaY * 0.002), e.offsetX);
    }, { passive: false });
    let drag = null;
    c.addEventListener("mousedown", (e) => { drag = { x: e.offsetX, y: e.offsetY, moved: false }; c.focus(); });
    window.addEventListener("mouseup", (e) => {
      if (drag && !drag.moved && e.target === c) this.click(e.offsetX, e.offsetY);
      drag = null;
    });
    c.addEventListener("mousemove", (e) => {
      if (drag) {
        const dx = e.offsetX - drag.x, dy = e.offsetY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
        if (drag.moved) { drag.x = e.offsetX; drag.y = e.offsetY; this.pan(-dx); this.scroll(-dy); }
      }
      this.hover(e);
    });
    c.addEventListener("mouseleave", () => { document.getElementById("tip").hidden = true; });
    c.addEventListener("keydown", (e) => {
      const k = e.key.toLowerCase(), step = this.plotW * 0.15;
      if (k === "w") this.zoom(0.8);
      else if (k === "s") this.zoom(1.25);
      else if (k === "a" || k === "arrowleft") this.pan(-step);
      else if (k === "d" || k === "arrowright") this.pan(step);
      else if (k === "arrowup") this.scroll(-ROW * 3);
      else if (k === "arrowdown") this.scroll(ROW * 3);
      else return;
      e.preventDefault();
    });
  }

  // ---- data -------------------------------------------------------------------------------

  level() { return Math.max(0, Math.floor(Math.log2(Math.max(1, this.nsPerPx())))); }

  tile(kind, lane, k, j) {
    const key = `${kind}${lane.p}:${lane.t.tid}:${k}:${j}`;
    const hit = this.cache.get(key);
    if (hit) { this.cache.delete(key); this.cache.set(key, hit); } // most recently used last
    return [key, hit];
  }

  want(kind, lane, k, j) {
    const [key, hit] = this.tile(kind, lane, k, j);
    if (hit) return hit.data;
    this.cache.set(key, { data: null });
    this.queue.push([key, kind, lane, k, j]);
    this.pump();
    return null;
  }

  pump() {
    while (this.inflight < MAX_INFLIGHT && this.queue.length) {
      const [key, kind, lane, k, j] = this.queue.pop(); // newest first: what is on screen now
      const res = 2 ** k, span = TILE_PX * res, t0 = j * span, t1 = t0 + span;
      const pend = lane.proc.end_ns;
      if (t0 > pend || t1 < 0) { this.cache.set(key, { data: { n: 0 } }); continue; }
      this.inflight++;
      const q = kind === "s" ? this.source.slices(lane.p, lane.t.tid, Math.max(0, t0), Math.min(pend, t1), res)
        : this.source.states(lane.p, lane.t.tid, Math.max(0, t0), Math.min(pend, t1), res);
      q.then((d) => { this.cache.set(key, { data: d }); }, (err) => {
        this.cache.delete(key); this.state.errors.push(String(err));
      }).finally(() => { this.inflight--; this.trim(); this.pump(); this.redraw(); });
    }
  }

  trim() {
    for (const key of this.cache.keys()) {
      if (this.cache.size <= CACHE_TILES) break;
      if (this.cache.get(key).data) this.cache.delete(key);
    }
  }

  // The tiles to draw a lane from: the current level's where present, else a coarser one's.
  tilesFor(kind, lane) {
    const off = lane.proc.offset_ns, k = this.level();
    const a = this.t0 - off, b = this.t1 - off, out = [];
    let complete = true;
    const span = TILE_PX * 2 ** k;
    for (let j = Math.floor(Math.max(0, a) / span); j * span <= Math.min(b, lane.proc.end_ns); j++) {
      const d = this.want(kind, lane, k, j);
      if (d) { out.push(d); continue; }
      complete = false;
      for (let kk = k + 1; kk < k + 12; kk++) { // something coarser, already here
        const s2 = TILE_PX * 2 ** kk, [, hit] = this.tile(kind, lane, kk, Math.floor((j * span) / s2));
        if (hit && hit.data) { out.push(hit.data); break; }
      }
    }
    return { tiles: out, complete };
  }

  // ---- drawing ------------------------------------------------------------------------------

  redraw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  color(fid, proc, c, merged) {
    const key = proc.pid + ":" + fid + (merged ? "m" : "");
    let col = this.colorCache.get(key);
    if (!col) {
      const f = proc.functions[fid] || ["?", "", "", false];
      const h = hue(f[2] || f[0]);
      // C calls: darker and more grey than Python ones (and drawn with a border)
      col = f[3] ? `hsl(${h},30%,${merged ? 55 : 45}%)` : `hsl(${h},65%,${merged ? 82 : 72}%)`;
      this.colorCache.set(key, col);
    }
    return col;
  }

  draw() {
    const ctx = this.ctx, W = this.W, H = this.H, nspp = this.nsPerPx();
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
    ctx.font = "11px sans-serif"; ctx.textBaseline = "middle";
    const laneState = [], q = this.query, hits = [];
    let matches = 0;
    for (const lane of this.lanes) {
      const top = AXIS_H + lane.y - this.scrollY, y0 = top, y1 = top + lane.h;
      const info = { pid: lane.proc.pid, p: lane.p, tid: lane.t.tid, name: lane.t.name, y0, y1, drawn: 0, complete: true };
      laneState.push(info);
      if (y1 < AXIS_H || y0 > H) continue;
      const off = lane.proc.offset_ns, proc = lane.proc;
      ctx.fillStyle = "#f7f7f7"; ctx.fillRect(GUTTER, y0, W - GUTTER, lane.h - 4);
      if (lane.strip) {
        info.stateY0 = y0; info.stateY1 = y0 + STATE_H;
        for (const d of this.tilesFor("t", lane).tiles) {
          for (let i = 0; i < d.n; i++) {
            const x0 = Math.max(GUTTER, this.xOf(d.start[i] + off)), x1 = Math.min(W, this.xOf(d.end[i] + off));
            if (x1 < GUTTER || x0 > W) continue;
            ctx.fillStyle = STATE_COLORS[d.state[i]] || "#999";
            ctx.fillRect(x0, y0, Math.max(1, x1 - x0), STATE_H);
          }
        }
      }
      const { tiles, complete } = this.tilesFor("s", lane);
      info.complete = complete;
      const base = y0 + lane.strip, laneHits = [];
      for (const d of tiles) {
        for (let i = 0; i < d.n; i++) {
          const depth = d.depth[i];
          if (depth < 1 || depth > lane.rows) continue;
          let x0 = this.xOf(d.start[i] + off), x1 = this.xOf(d.end[i] + off);
          if (x1 < GUTTER || x0 > W) continue;
          // whole pixels: a slice narrower than one at a fractional x was blended into its
          // neighbours, and a search's highlight could show in no pixel of its own colour
          x0 = Math.floor(Math.max(GUTTER, x0)); x1 = Math.min(W, Math.max(Math.round(x1), x0 + 1));
          const y = base + (depth - 1) * ROW, fid = d.fid[i], f = proc.functions[fid] || ["?", "", "", false];
          const match = q && f[0].toLowerCase().includes(q);
          ctx.fillStyle = match ? HIGHLIGHT : this.color(fid, proc, f[3], d.count[i] > 1);
          ctx.fillRect(x0, y, x1 - x0, ROW - 1);
          if (f[3] && x1 - x0 > 3) { ctx.strokeStyle = "#333"; ctx.strokeRect(x0 + 0.5, y + 0.5, x1 - x0 - 1, ROW - 2); }
          if (match) matches++;
          info.drawn++;
          laneHits.push([x0, x1, y, d, i]);
          if (x1 - x0 > 28) {
            const n = Math.floor((x1 - x0 - 4) / 6);
            const label = f[0].length > n ? f[0].slice(0, Math.max(1, n - 1)) + "…" : f[0];
            ctx.fillStyle = "#111"; ctx.fillText(label, x0 + 2, y + ROW / 2);
          }
        }
      }
      hits.push([lane, laneHits]);
      // dropped-event gaps: hatched red, over every depth
      for (const [g0, g1, dropped] of lane.t.gaps) {
        const x0 = Math.max(GUTTER, this.xOf(g0 + off)), x1 = Math.min(W, this.xOf(g1 + off));
        if (x1 < GUTTER || x0 > W) continue;
        ctx.fillStyle = "rgba(220,0,0,0.25)"; ctx.fillRect(x0, y0, Math.max(2, x1 - x0), lane.h - 4);
        ctx.fillStyle = "#b00"; ctx.fillText(dropped ? `${dropped} dropped` : "gap", x0 + 2, y0 + 8);
      }
      if (proc.truncated) this.cutMark(this.xOf(lane.t.last_ns + off), y0, lane.h - 4);
      // the lane's name, in the gutter
      ctx.fillStyle = "#fff"; ctx.fillRect(0, y0, GUTTER, lane.h);
      ctx.fillStyle = "#222"; ctx.fillText(`${lane.t.name} (${lane.t.tid})`, 6, y0 + 9);
    }
    this.hits = hits;
    // process headers
    let lastP = -1;
    for (const lane of this.lanes) {
      if (lane.p === lastP) continue;
      lastP = lane.p;
      const y = AXIS_H + lane.y - PROC_H - this.scrollY;
      ctx.fillStyle = "#e6e6e6"; ctx.fillRect(0, y, W, PROC_H - 2);
      ctx.fillStyle = "#000";
      const p = lane.proc;
      ctx.fillText(`process ${p.pid}: ${p.name} (${p.mode === "sample" ? "sampled" : "traced"})` + (p.truncated ? " — TRUNCATED" : ""), 6, y + 8);
    }
    this.axis(nspp);
    Object.assign(this.state, { t0: this.t0, t1: this.t1, nsPerPx: nspp, lanes: laneState, timelineMatches: matches });
  }

  cutMark(x, y, h) {
    const ctx = this.ctx;
    if (x > this.W || x < GUTTER) return;
    ctx.fillStyle = "rgba(200,0,0,0.35)"; ctx.fillRect(x, y, 6, h);
    ctx.fillStyle = "#b00"; ctx.fillText("trace cut here", x + 8, y + h - 6);
  }

  axis(nspp) {
    const ctx = this.ctx;
    ctx.fillStyle = "#fafafa"; ctx.fillRect(0, 0, this.W, AXIS_H);
    ctx.fillStyle = "#000"; ctx.fillRect(0, AXIS_H - 1, this.W, 1);
    const raw = nspp * 90, p = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
    const units = (ns) => ns >= 1e9 ? ["s", 1e9] : ns >= 1e6 ? ["ms", 1e6] : ns >= 1e3 ? ["µs", 1e3] : ["ns", 1];
    const [unit, div] = units(step);
    // deep in a long trace "437800 µs" says little: the first tick gets the time in its own
    // unit, to the step's precision ("437.8 ms"), and the others their offset from it
    let first = null;
    for (let t = Math.ceil(this.t0 / step) * step; t <= this.t1; t += step) {
      const x = this.xOf(t);
      if (x < GUTTER) continue;
      ctx.fillRect(x, AXIS_H - 6, 1, 6);
      let label = `${+(t / div).toFixed(6)} ${unit}`;
      if (Math.abs(t) >= 1000 * step) {
        if (first === null) {
          first = t;
          const [u, d] = units(Math.abs(t));
          label = `${(t / d).toFixed(Math.max(0, Math.ceil(Math.log10(d / step))))} ${u}`;
        } else {
          label = `+${+((t - first) / div).toFixed(6)} ${unit}`;
        }
      }
      ctx.fillText(label, x + 2, 9);
    }
    ctx.fillText(`${FT.dur(this.t1 - this.t0)} shown`, 6, 9);
  }

  // ---- hover and click ----------------------------------------------------------------------

  find(x, y) {
    for (const [lane, items] of this.hits) {
      for (const it of items) if (x >= it[0] && x <= it[1] && y >= it[2] && y < it[2] + ROW) return [lane, it];
    }
    return null;
  }

  describe(lane, d, i) {
    const f = lane.proc.functions[d.fid[i]] || ["?", ""];
    const dur = d.end[i] - d.start[i];
    let kids = 0, approx = d.count[i] > 1;
    // self = the slice less its callees (those drawn now; merged runs make it approximate)
    for (const [, items] of this.hits.filter((h) => h[0] === lane)) {
      for (const [, , , dd, j] of items) {
        if (dd.depth[j] === d.depth[i] + 1 && dd.start[j] >= d.start[i] && dd.end[j] <= d.end[i]) {
          kids += dd.end[j] - dd.start[j]; if (dd.count[j] > 1) approx = true;
        }
      }
    }
    return { f, dur, self: Math.max(0, dur - kids), approx };
  }

  hover(e) {
    const tip = document.getElementById("tip"), h = this.find(e.offsetX, e.offsetY);
    if (!h) { tip.hidden = true; return; }
    const [lane, [, , , d, i]] = h, s = this.describe(lane, d, i), a = s.approx ? "≈ " : "";
    tip.innerHTML = `<b>${FT.esc(s.f[0])}</b><br>${FT.esc(s.f[1])}<br>total ${a}${FT.dur(s.dur)} · self ${a}${FT.dur(s.self)}` +
      (d.count[i] > 1 ? `<br>${d.count[i]} calls merged (each shorter than a pixel)` : "");
    tip.hidden = false;
    tip.style.left = e.clientX + 14 + "px"; tip.style.top = e.clientY + 14 + "px";
  }

  async click(x, y) {
    const h = this.find(x, y);
    if (!h) { this.selected = null; this.onSelect(null); return; }
    const [lane, [, , , d, i]] = h;
    const s0 = d.start[i], s1 = d.end[i], depth = d.depth[i];
    const sel = { lane, fid: d.fid[i], depth, start: s0, end: s1, info: this.describe(lane, d, i) };
    this.selected = sel;
    const name = (fid) => (lane.proc.functions[fid] || ["?"])[0];
    if (this.source.call && d.count[i] === 1) {
      // the server folds the call's range: exact self time and callees
      const c = await this.source.call(lane.p, lane.t.tid, d.node[i], s0, s1);
      sel.info = { ...sel.info, self: c.self_ns, approx: false };
      sel.callees = c.callees.map(([fid, calls, ns, self]) => ({ fid, calls, ns, self, merged: false, qualname: name(fid) }));
      this.onSelect(sel);
      return;
    }
    // (an exported page, or a merged run) the slices one deeper inside it, at a resolution
    // that resolves most calls
    const kids = await this.source.slices(lane.p, lane.t.tid, s0, s1, Math.max(1, (s1 - s0) / 4000));
    const by = new Map();
    for (let j = 0; j < kids.n; j++) {
      if (kids.depth[j] !== depth + 1 || kids.start[j] < s0 || kids.end[j] > s1) continue;
      const r = by.get(kids.fid[j]) || { fid: kids.fid[j], calls: 0, ns: 0, merged: false };
      r.calls += kids.count[j]; r.ns += kids.end[j] - kids.start[j]; r.merged = r.merged || kids.count[j] > 1;
      by.set(kids.fid[j], r);
    }
    sel.callees = [...by.values()].sort((a, b) => b.ns - a.ns).map((r) => ({ ...r, qualname: name(r.fid) }));
    this.onSelect(sel);
  }
}
