"use strict";
// Flame graphs and blocking profiles, folded from a call tree (fasttrace/viewer/_api.py
// tree_json: parallel arrays, a node's children numbered after it).

// A frame tree of the chosen threads (tid null: all of them, merged by stack), each frame
// { fid, name, value (inclusive ns), self, kids: Map fid -> frame }.
function foldFrames(tree, tid) {
  const root = { fid: 0, name: "all", value: 0, self: 0, kids: new Map() };
  const frame = new Array(tree.parent.length);
  for (const [t, r, end] of tree.threads) {
    if (tid != null && t !== tid) continue;
    frame[r] = root;
    for (let n = r + 1; n < end; n++) {
      const parent = frame[tree.parent[n]], fid = tree.fid[n];
      let f = parent.kids.get(fid);
      if (!f) { f = { fid, name: (tree.functions[fid] || ["?"])[0], value: 0, self: 0, kids: new Map() }; parent.kids.set(fid, f); }
      frame[n] = f;
    }
    for (let n = r; n < end; n++) frame[n].self += tree.self[n];
  }
  (function sum(f) { f.value = f.self; for (const k of f.kids.values()) f.value += sum(k); return f.value; })(root);
  root.value -= root.self; // the root's own time is no frame open (gaps, start-up): not drawn
  return root;
}

class Flame {
  constructor(canvas, state) { this.c = canvas; this.state = state; this.root = null; this.focus = null; this.query = ""; this.hits = []; this.bind(); }
  set(root) { this.root = root; this.focus = root; this.draw(); }
  bind() {
    this.c.addEventListener("click", (e) => {
      const h = this.find(e.offsetX, e.offsetY);
      this.focus = h ? h.f : this.root; // click-to-zoom; the background zooms out
      this.draw();
    });
    this.c.addEventListener("mousemove", (e) => {
      const tip = document.getElementById("flame-tip"), h = this.find(e.offsetX, e.offsetY);
      if (!h) { tip.hidden = true; return; }
      tip.innerHTML = `<b>${FT.esc(h.f.name)}</b><br>total ${FT.dur(h.f.value)} · self ${FT.dur(h.f.self)}`;
      tip.hidden = false; tip.style.left = e.clientX + 14 + "px"; tip.style.top = e.clientY + 14 + "px";
    });
  }
  find(x, y) { return this.hits.find((h) => x >= h.x && x < h.x + h.w && y >= h.y && y < h.y + 17) || null; }
  draw() {
    if (!this.root) return;
    const W = Math.max(200, this.c.getBoundingClientRect().width), ROWH = 17, q = this.query;
    let depth = 0;
    (function d(f, k) { depth = Math.max(depth, k); for (const c of f.kids.values()) d(c, k + 1); })(this.focus, 0);
    const H = (depth + 1) * ROWH + 4, dpr = window.devicePixelRatio || 1;
    this.c.style.height = H + "px"; this.c.width = W * dpr; this.c.height = H * dpr;
    const ctx = this.c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
    ctx.font = "11px sans-serif"; ctx.textBaseline = "middle";
    this.hits = [];
    let matches = 0;
    const total = this.focus.value || 1;
    const draw = (f, x, k) => {
      const w = (f.value / total) * W;
      if (w < 0.5) return;
      const y = k * ROWH, match = q && f.name.toLowerCase().includes(q);
      if (match) matches++;
      ctx.fillStyle = match ? HIGHLIGHT : `hsl(${hue(f.name)},60%,${f === this.focus ? 60 : 72}%)`;
      ctx.fillRect(x, y, w - 0.5, ROWH - 1);
      if (w > 30) { ctx.fillStyle = "#111"; ctx.fillText(f.name.slice(0, Math.floor(w / 6.2)), x + 3, y + ROWH / 2); }
      this.hits.push({ f, x, y, w });
      let cx = x;
      for (const c of [...f.kids.values()].sort((a, b) => b.value - a.value)) { draw(c, cx, k + 1); cx += (c.value / total) * W; }
    };
    draw(this.focus, 0, 0);
    this.state.flame = Object.assign(this.state.flame || {}, { total: this.root.value, focus: this.focus.name, frames: this.hits.length, matches });
  }
}

// Blocking: where threads waited, by stack.  The categories go by function name (the leaf's).
const IO_NAMES = new Set(["recv", "recvfrom", "recv_into", "recvfrom_into", "recvmsg", "select", "poll",
  "epoll.poll", "kqueue.control", "sleep", "read", "readinto", "readline", "accept", "connect",
  "send", "sendall", "sendto", "sendmsg", "sendfile", "write", "waitpid", "wait4", "waitid", "getaddrinfo"]);
const LOCK_NAMES = new Set(["acquire", "wait", "join", "wait_for", "acquire_lock", "get", "put"]);

function blockCategory(f) { // f: [qualname, where, module, is_c, name]
  const name = f[4], q = f[0];
  if (LOCK_NAMES.has(name) || /Condition\.wait|Event\.wait|Thread\.join|Lock\.acquire/.test(q)) return "lock";
  if (IO_NAMES.has(name) || IO_NAMES.has(q)) return "I/O and sleep";
  return null;
}

// Trace mode: the C calls in those categories, their inclusive time by stack.  Sampling mode:
// each node's call_ns (waiting inside a call: lock if the leaf frame names a lock wait, else I/O
// and sleep) and gil_ns (waiting for the GIL).
function blocking(tree, tid, sampled) {
  const inc = Float64Array.from(tree.self);
  for (let n = inc.length - 1; n >= 0; n--) if (tree.parent[n] >= 0) inc[tree.parent[n]] += inc[n];
  const rows = new Map();
  const stackOf = (n) => { const s = []; for (; tree.parent[n] >= 0; n = tree.parent[n]) s.push((tree.functions[tree.fid[n]] || ["?"])[0]); return s.reverse(); };
  const add = (cat, n, ns) => {
    if (ns <= 0) return;
    const stack = stackOf(n), key = cat + "\n" + stack.join("\n");
    const r = rows.get(key) || { category: cat, ns: 0, stack };
    r.ns += ns; rows.set(key, r);
  };
  for (const [t, r, end] of tree.threads) {
    if (tid != null && t !== tid) continue;
    for (let n = r + 1; n < end; n++) {
      const f = tree.functions[tree.fid[n]] || ["?", "", "", false, "?"];
      if (sampled) {
        add(blockCategory(f) === "lock" ? "lock" : "I/O and sleep", n, tree.call[n]);
        add("GIL", n, tree.gil[n]);
      } else if (f[3]) {
        const cat = blockCategory(f);
        // the outermost such call only: its callees' time is inside its own
        let outer = true;
        for (let a = tree.parent[n]; a >= 0 && outer; a = tree.parent[a]) {
          const fa = tree.functions[tree.fid[a]];
          if (fa && fa[3] && blockCategory(fa)) outer = false;
        }
        if (cat && outer) add(cat, n, inc[n]);
      }
    }
  }
  return [...rows.values()].sort((a, b) => b.ns - a.ns);
}
