# Included by _core.pyx: the boundary of ft_fold.c (docs/viewer-design.md).  fold_events()
# and fold_samples() drive the reader chunk by chunk and hand each decoded chunk to the fold;
# no event becomes a Python object.  fasttrace/_calltree.py is the Python face.

from cpython.exc cimport PyErr_CheckSignals
from ft_fold cimport *
from libc.stdint cimport INT64_MIN, INT64_MAX
from libc.string cimport memset

import array


cdef bytes _int64s(const int64_t* p, size_t n):
    """n int64s as bytes (array('q').frombytes takes them)."""
    if n == 0:
        return b""
    return (<const char*>p)[:n * 8]


class TooManySlices(ValueError):
    """A range query would answer with more slices than its limit."""


cdef _fold_error(int rc, size_t limit):
    if rc == FT_FOLD_TOO_MANY:
        raise TooManySlices(f"more than {limit:,} slices in this range at this resolution")
    raise MemoryError()


cdef class Fold:
    """A folded trace: per-thread call trees and, when asked for, timeline slices with their
    level-of-detail pyramid.  Owns the C memory; thread ids index it."""
    cdef ft_fold f
    cdef bint live
    # Sampled traces: thread id -> slot in f.threads, and back, in the order first sampled (a
    # sample's thread id is not bounded by any definition: damage must not size an array).
    cdef dict _slot
    cdef list _tids
    # Trace mode with slices: what a query finer than the kept pyramid decodes again.
    cdef list _files          # the TraceFiles
    cdef bytearray _fid_kind
    cdef dict _chunks         # thread id -> [(file index, offset, size, base_tick, boundary)]
    cdef dict _chunk_ns       # thread id -> array('q') of the chunks' base times (ns)
    cdef dict _end_bnd        # thread id -> the boundary after its last chunk
    cdef tuple _ticks         # (start_tick, ns_per_tick, end_tick)

    def __dealloc__(self):
        if self.live:
            ft_fold_free(&self.f)
            self.live = False

    cdef long _index(self, tid) except -1:
        """The slot of thread id `tid` (itself, unless the threads are slotted)."""
        if self._slot is not None:
            if tid not in self._slot:
                raise KeyError(f"no thread {tid} in this trace")
            return self._slot[tid]
        return tid

    cdef ft_fold_thread* _th(self, tid) except NULL:
        cdef long i = self._index(tid) if tid >= 0 else -1
        if not self.live or i < 0 or <size_t>i >= self.f.n_threads or self.f.threads[i].n == 0:
            raise KeyError(f"no thread {tid} in this trace")
        return &self.f.threads[i]

    @property
    def events(self):
        """Events (or samples) folded."""
        return self.f.events

    def threads(self):
        """(tid, nodes, first_ns, last_ns, gap_ns, gaps, dropped, max_depth, slices) of every
        thread with an event, in id order."""
        cdef size_t t
        cdef ft_fold_thread* th
        out = []
        for t in range(self.f.n_threads):
            th = &self.f.threads[t]
            if th.n == 0 or not th.seen:
                continue
            out.append((t if self._tids is None else self._tids[t], th.n, th.first_ns,
                        th.last_ns, th.gap_ns, th.gaps, th.dropped, th.max_depth, th.n_slices))
        return out

    def tree(self, tid):
        """Thread tid's tree: parent, fid, depth, self_ns, calls (and, sampled, the self time
        of each state) as int64 bytes, node 0 its root."""
        cdef ft_fold_thread* th = self._th(tid)
        out = {"parent": _int64s(th.parent, th.n), "fid": _int64s(th.fid, th.n),
               "depth": _int64s(th.depth, th.n), "self_ns": _int64s(th.self_ns, th.n),
               "calls": _int64s(th.calls, th.n)}
        if self.f.sampled:
            out["running_ns"] = _int64s(th.state_ns[0], th.n)
            out["gil_ns"] = _int64s(th.state_ns[1], th.n)
            out["call_ns"] = _int64s(th.state_ns[2], th.n)
        return out

    def query(self, tid, int64_t t0, int64_t t1, int64_t res, bint states=False,
              int64_t node_base=0, size_t limit=0):
        """(start, end, node, count) as int64 bytes: the slices of thread tid overlapping
        [t0, t1] at res ns per pixel (states: the states lane instead, node = the state).
        node_base is added to each node (the thread's first node in a concatenated tree).
        limit: at most this many (0: no limit), else TooManySlices."""
        cdef ft_fold_thread* th = self._th(tid)
        cdef ft_slice_vec v
        cdef size_t i
        v.v = NULL
        v.n = v.cap = 0
        cdef int rc = ft_fold_query(&self.f, th, t0, t1, res if res > 0 else 0, states, limit,
                                    &v)
        if rc < 0:
            ft_slice_vec_free(&v)
            _fold_error(rc, limit)
        if rc == 1:
            try:
                self._replay(tid, th, t0, t1, res if res > 0 else 0, limit, &v)
            except BaseException:
                ft_slice_vec_free(&v)
                raise
        start = bytearray(v.n * 8)
        end = bytearray(v.n * 8)
        node = bytearray(v.n * 8)
        count = bytearray(v.n * 8)
        cdef int64_t[::1] s_ = memoryview(start).cast("q") if v.n else None
        cdef int64_t[::1] e_ = memoryview(end).cast("q") if v.n else None
        cdef int64_t[::1] n_ = memoryview(node).cast("q") if v.n else None
        cdef int64_t[::1] c_ = memoryview(count).cast("q") if v.n else None
        for i in range(v.n):
            s_[i] = v.v[i].start
            e_[i] = v.v[i].end
            n_[i] = v.v[i].node + (0 if states else node_base)
            c_[i] = v.v[i].count
        ft_slice_vec_free(&v)
        return start, end, node, count

    cdef _replay(self, tid, ft_fold_thread* th, int64_t t0, int64_t t1, int64_t res,
                 size_t limit, ft_slice_vec* out):
        """Decodes thread tid's chunks over [t0, t1] again, from the boundary before t0, into
        slices merged at res: the part of the pyramid the budget did not keep."""
        import bisect
        cdef list chunks = self._chunks.get(tid) or []
        cdef ft_replay r
        cdef ft_thread_decoder d
        cdef ft_event_buf buf
        cdef ft_rfile rf
        cdef ft_read_error err
        cdef ft_functions_view fv
        cdef const uint8_t[::1] kinds = self._fid_kind
        cdef const uint8_t* payload
        cdef TraceFile f
        cdef size_t i, j, b, end_b
        cdef long seg = -1
        if not chunks:
            return
        i = max(bisect.bisect_right(self._chunk_ns[tid], t0) - 1, 0)
        fv.fid_kind = &kinds[0]
        fv.n_fids = <uint32_t>len(self._fid_kind)
        buf.ev = NULL
        buf.n = buf.cap = 0
        cdef int rc
        if ft_replay_begin(&r, th, <size_t>chunks[i][4], &d, t0, t1,
                           ft_fold_level_for(res), limit) < 0:
            ft_replay_free(&r)
            ft_thread_decoder_free(&d)
            raise MemoryError()
        try:
            j = i
            while j < len(chunks) and (j == i or self._chunk_ns[tid][j] <= t1):
                file_index, off, size, base_tick, b = chunks[j]
                if file_index != seg:
                    if seg >= 0:
                        ft_rfile_free(&rf)
                    f = <TraceFile>self._files[file_index]
                    ft_rfile_init(&rf, f._fd, f._size)
                    seg = file_index
                ft_replay_enter(th, b, &d)
                payload = f._reread(&rf, off, <uint32_t>size, FT_CHUNK_EVENTS, tid, base_tick)
                buf.n = 0
                if ft_decode_events(&d, &fv, payload, size, off + FT_CHUNK_HEADER_SIZE,
                                    base_tick, f._h.version, &buf, &err) < 0:
                    from fasttrace._errors import FormatError
                    raise FormatError(f.path, err.offset, err.reason.decode("utf-8", "replace"))
                rc = ft_replay_events(&r, &self.f, th, buf.ev, buf.n)
                if rc < 0:
                    _fold_error(rc, limit)
                j += 1
            end_b = <size_t>(chunks[j][4] if j < len(chunks) else self._end_bnd[tid])
            rc = ft_replay_end(&r, th, end_b, out)
            if rc < 0:
                _fold_error(rc, limit)
        finally:
            if seg >= 0:
                ft_rfile_free(&rf)
            ft_replay_free(&r)
            ft_thread_decoder_free(&d)
            ft_event_buf_free(&buf)

    def window(self, int64_t t0, int64_t t1, only=None):
        """A Fold (call trees only) of [t0, t1], as fold_events(w0=t0, w1=t1) gives it, from
        each thread's chunk boundary before t0 to its first chunk after t1: the work is the
        range's, not the trace's.  only: that thread alone.  Needs a fold made with slices
        (it has the boundaries)."""
        import bisect
        if self._chunks is None:
            raise ValueError("window(): this fold has no chunk boundaries (slices=False)")
        cdef uint64_t start_tick = self._ticks[0], end_tick = self._ticks[2]
        cdef double npt = self._ticks[1]
        cdef Fold out = _new_fold(self.f.n_threads, False, False, start_tick, npt, t0, t1)
        cdef ft_thread_decoder d
        cdef ft_event_buf buf
        cdef ft_rfile rf
        cdef ft_read_error err
        cdef ft_functions_view fv
        cdef const uint8_t[::1] kinds = self._fid_kind
        cdef const uint8_t* payload
        cdef TraceFile f
        cdef ft_fold_thread* th
        cdef size_t i, j, n
        cdef long seg
        cdef list chunks
        fv.fid_kind = &kinds[0]
        fv.n_fids = <uint32_t>len(self._fid_kind)
        buf.ev = NULL
        buf.n = buf.cap = 0
        memset(&d, 0, sizeof(d))
        try:
            for tid in sorted(self._chunks):
                if only is not None and tid != only:
                    continue
                chunks = self._chunks[tid]
                th = self._th(tid)
                n = len(chunks)
                i = max(bisect.bisect_right(self._chunk_ns[tid], t0) - 1, 0)
                ft_thread_decoder_free(&d)
                if ft_fold_resume(&out.f, <uint32_t>tid, th, <size_t>chunks[i][4],
                                  self._chunk_ns[tid][i], &d) < 0:
                    raise MemoryError()
                seg = -1
                j = i
                while j < n:
                    file_index, off, size, base_tick, b = chunks[j]
                    if file_index != seg:
                        if seg >= 0:
                            ft_rfile_free(&rf)
                        f = <TraceFile>self._files[file_index]
                        ft_rfile_init(&rf, f._fd, f._size)
                        seg = file_index
                    ft_replay_enter(th, b, &d)
                    payload = f._reread(&rf, off, <uint32_t>size, FT_CHUNK_EVENTS, tid,
                                        base_tick)
                    buf.n = 0
                    if ft_decode_events(&d, &fv, payload, size, off + FT_CHUNK_HEADER_SIZE,
                                        base_tick, f._h.version, &buf, &err) < 0:
                        from fasttrace._errors import FormatError
                        raise FormatError(f.path, err.offset,
                                          err.reason.decode("utf-8", "replace"))
                    if ft_fold_events(&out.f, <uint32_t>tid, buf.ev, buf.n) < 0:
                        raise MemoryError()
                    PyErr_CheckSignals()
                    if self._chunk_ns[tid][j] > t1:  # its events end the window's time
                        break
                    j += 1
                if seg >= 0:
                    ft_rfile_free(&rf)
                    seg = -1
                if j == n:  # the thread's end: what is open closes where the trace ends
                    buf.n = 0
                    if ft_close_open(&d, &fv, max(end_tick, d.last_tick), &buf) < 0 or (
                            buf.n and ft_fold_events(&out.f, <uint32_t>tid, buf.ev,
                                                     buf.n) < 0):
                        raise MemoryError()
        finally:
            if seg >= 0:
                ft_rfile_free(&rf)
            ft_thread_decoder_free(&d)
            ft_event_buf_free(&buf)
        return out

    def functions(self, tid):
        """Thread tid's functions: [(fid, calls, self_ns, total_ns)] (see ft_fold_functions),
        in function id order."""
        cdef ft_fold_thread* th = self._th(tid)
        cdef size_t n = 1, i
        for i in range(th.n):
            if th.fid[i] >= 0 and <size_t>th.fid[i] >= n:
                n = <size_t>th.fid[i] + 1
        calls = array.array("q", bytes(8 * n))
        self_ns = array.array("q", bytes(8 * n))
        total_ns = array.array("q", bytes(8 * n))
        seen = bytearray(n)
        cdef int64_t[::1] c_ = calls
        cdef int64_t[::1] s_ = self_ns
        cdef int64_t[::1] t_ = total_ns
        cdef uint8_t[::1] seen_ = seen
        if ft_fold_functions(&self.f, th, &c_[0], &s_[0], &t_[0], &seen_[0], n) < 0:
            raise MemoryError()
        return [(i, c_[i], s_[i], t_[i]) for i in range(n) if seen_[i]]

    def gaps(self, tid):
        """Thread tid's gaps: [(start_ns, end_ns, events dropped)]."""
        cdef ft_fold_thread* th = self._th(tid)
        cdef size_t i
        return [(th.gap_list.v[i].start, th.gap_list.v[i].end, th.gap_list.v[i].node)
                for i in range(th.gap_list.n)]

    @property
    def kept_bytes(self):
        """Bytes of pyramid kept in memory."""
        return self.f.kept

    @property
    def finest_level(self):
        """The finest level kept (0: every slice): finer queries decode again."""
        return self.f.finest

    # ---- feeding slices from outside (the timeline of a sampled trace) ----

    def child(self, tid, int64_t parent, int64_t fid):
        cdef int64_t node = ft_fold_child(&self.f, <uint32_t>self._index(tid), parent, fid)
        if node < 0:
            raise ValueError(f"no node {parent} in thread {tid}, or out of memory")
        return node

    def slice_open(self, tid, int64_t node, int64_t ts):
        if ft_fold_slice_open(&self.f, <uint32_t>self._index(tid), <uint32_t>node, ts) < 0:
            raise MemoryError()

    def slice_close(self, tid, int64_t ts):
        if ft_fold_slice_close(&self.f, <uint32_t>self._index(tid), ts) < 0:
            raise MemoryError()

    def add_state(self, tid, int64_t start, int64_t end, int state):
        if ft_fold_add_state(&self.f, <uint32_t>self._index(tid), start, end, state) < 0:
            raise MemoryError()

    def finish(self):
        """Builds the pyramids, once every slice is in."""
        if ft_fold_finish(&self.f) < 0:
            raise MemoryError()


cdef Fold _new_fold(size_t n_threads, bint slices, bint sampled, uint64_t start_tick,
                    double ns_per_tick, w0, w1, size_t budget=0):
    cdef Fold out = Fold.__new__(Fold)
    if ft_fold_init(&out.f, n_threads, slices, sampled, start_tick, ns_per_tick,
                    INT64_MIN if w0 is None else <int64_t>w0,
                    INT64_MAX if w1 is None else <int64_t>w1, budget) < 0:
        raise MemoryError()
    out.live = True
    return out


def fold_events(list files, list breaks, bytearray fid_kind, uint64_t start_tick,
                double ns_per_tick, uint64_t end_tick, bint slices=False, w0=None, w1=None,
                progress=None, size_t budget=0, int64_t min_ns=0):
    """Folds the events of TraceFiles (one, or a series: breaks[i] says a discontinuity comes
    before files[i]) as events() decodes them; w0/w1: only time in [w0, w1] ns counts.
    slices: also the timeline pyramid, at most `budget` bytes of it (0: all).
    min_ns (not with slices): calls shorter than it are taken out, their time their caller's.
    progress(events folded) is called after each chunk."""
    cdef TraceFile f
    cdef uint32_t max_thread = 0
    cdef size_t k, seg, n_decs
    cdef ft_thread_decoder* decs
    cdef ft_event_buf buf
    cdef ft_rfile rf
    cdef bint rf_open = False
    cdef ft_read_error err
    cdef ft_functions_view fv
    cdef const uint8_t[::1] kinds = fid_kind
    cdef const uint8_t* payload
    cdef uint32_t tid
    cdef uint64_t base_tick, close_tick
    cdef int64_t stop_ns = INT64_MAX if w1 is None else <int64_t>w1
    cdef int rc
    for f in files:
        if f._fd < 0:
            raise ValueError(f"{f.path}: the trace is closed")
        if f._max_thread > max_thread:
            max_thread = f._max_thread
    if slices and min_ns > 0:
        raise ValueError("fold_events: min_ns does not go with slices")
    cdef Fold out = _new_fold(<size_t>max_thread + 1, slices, False, start_tick, ns_per_tick,
                              w0, w1, budget)
    out.f.min_ns = min_ns
    cdef int64_t bnd
    cdef dict chunk_list = {}
    if slices:
        out._files = files
        out._fid_kind = fid_kind
        out._chunks = chunk_list
        out._end_bnd = {}
        out._ticks = (start_tick, ns_per_tick, end_tick)
    n_decs = <size_t>max_thread + 1
    decs = <ft_thread_decoder*>calloc(n_decs, sizeof(ft_thread_decoder))
    if decs == NULL:
        raise MemoryError()
    past = bytearray(n_decs)
    buf.ev = NULL
    buf.n = buf.cap = 0
    fv.fid_kind = &kinds[0]
    fv.n_fids = <uint32_t>len(fid_kind)
    try:
        for seg in range(len(files)):
            f = <TraceFile>files[seg]
            if breaks[seg]:
                for k in range(n_decs):
                    ft_thread_decoder_break(&decs[k])
            ft_rfile_init(&rf, f._fd, f._size)
            rf_open = True
            for off, size, tid, base_tick in f._chunks:
                if stop_ns != INT64_MAX and _tick_ns(base_tick, start_tick, ns_per_tick) > stop_ns:
                    # After the window: the thread's first such chunk still ends the time its
                    # last frame in the window was open; the rest count for nothing.
                    if past[tid]:
                        continue
                    past[tid] = 1
                payload = f._reread(&rf, off, <uint32_t>size, FT_CHUNK_EVENTS, tid, base_tick)
                if slices:  # where a query can start decoding again
                    bnd = ft_fold_boundary(&out.f, tid, &decs[tid])
                    if bnd < 0:
                        raise MemoryError()
                    chunk_list.setdefault(tid, []).append((seg, off, size, base_tick, bnd))
                buf.n = 0
                if ft_decode_events(&decs[tid], &fv, payload, size, off + FT_CHUNK_HEADER_SIZE,
                                    base_tick, f._h.version, &buf, &err) < 0:
                    from fasttrace._errors import FormatError
                    raise FormatError(f.path, err.offset, err.reason.decode("utf-8", "replace"))
                with nogil:
                    rc = ft_fold_events(&out.f, tid, buf.ev, buf.n)
                    if slices:
                        ft_fold_enforce_budget(&out.f)
                if rc < 0:
                    raise MemoryError()
                PyErr_CheckSignals()  # ^C between chunks, not only after the last
                if progress is not None:
                    progress(out.f.events)
            ft_rfile_free(&rf)
            rf_open = False
        # Frames still open when the trace ended close at its end, as events() closes them;
        # a last boundary before that tells a query reaching the end when they close.
        for k in range(1, n_decs):
            if slices and k in chunk_list:
                bnd = ft_fold_boundary(&out.f, <uint32_t>k, &decs[k])
                if bnd < 0:
                    raise MemoryError()
                out._end_bnd[k] = bnd
            close_tick = max(end_tick, decs[k].last_tick)
            buf.n = 0
            if ft_close_open(&decs[k], &fv, close_tick, &buf) < 0:
                raise MemoryError()
            if buf.n and ft_fold_events(&out.f, <uint32_t>k, buf.ev, buf.n) < 0:
                raise MemoryError()
        if slices:
            out.finish()
            out._chunk_ns = {tid: array.array("q", [_tick_ns(c[3], start_tick, ns_per_tick)
                                                    for c in cl])
                             for tid, cl in chunk_list.items()}
        if progress is not None:
            progress(out.f.events)
    finally:
        for k in range(n_decs):
            ft_thread_decoder_free(&decs[k])
        free(decs)
        ft_event_buf_free(&buf)
        if rf_open:
            ft_rfile_free(&rf)
    return out


def fold_samples(list files, bytes flat, bytes offsets, uint64_t start_tick, double ns_per_tick,
                 w0=None, w1=None, progress=None, bint running_only=False):
    """Folds the samples of TraceFiles (one, or a series) into per-thread trees.  Stack id i
    is flat[offsets[i]:offsets[i + 1]] (int64 function ids, root first, already canonical).
    w0/w1: only samples whose ts is in [w0, w1] count.  progress(samples) after each chunk.
    running_only: idle samples (the thread did not hold the GIL) are left out as if never
    taken: no node, time or sample count, and a thread never seen running has no tree; they
    are still counted in `events` (samples read), so that progress keeps pace."""
    cdef TraceFile f
    cdef ft_rfile rf
    cdef bint rf_open = False
    cdef ft_read_error err
    cdef ft_sample s
    cdef const uint8_t* payload
    cdef size_t pos, off, size
    cdef uint64_t tick, us
    cdef int64_t w
    cdef int rc, state
    cdef const int64_t* fids = <const int64_t*><const char*>flat
    cdef const int64_t* starts = <const int64_t*><const char*>offsets
    cdef uint64_t n_stacks = len(offsets) // 8 - 1 if len(offsets) >= 8 else 0
    for f in files:
        if f._fd < 0:
            raise ValueError(f"{f.path}: the trace is closed")
    # slices: a sampled timeline is fed afterwards (fasttrace/_timeline.py), all of it kept
    cdef Fold out = _new_fold(1, True, True, start_tick, ns_per_tick, w0, w1)
    cdef dict slot = {}
    out._slot = slot
    out._tids = []
    cdef long i
    try:
        for f in files:
            ft_rfile_init(&rf, f._fd, f._size)
            rf_open = True
            for off, size, tick in f._sample_chunks:
                payload = f._reread(&rf, off, <uint32_t>size, FT_CHUNK_SAMPLES, 0, tick)
                off += FT_CHUNK_HEADER_SIZE
                pos = 0
                while True:
                    rc = ft_next_sample(payload, size, &pos, off, &tick, &s, &err)
                    if rc == 0:
                        break
                    if rc < 0 or s.stack >= n_stacks:
                        from fasttrace._errors import FormatError
                        if rc < 0:
                            raise FormatError(f.path, err.offset,
                                              err.reason.decode("utf-8", "replace"))
                        raise FormatError(f.path, off + pos,
                                          f"sample uses stack id {s.stack} before its definition")
                    us = s.weight_us
                    # saturated, as the Sample objects are
                    w = <int64_t>(us * 1000) if us <= 9223372036854775u else INT64_MAX
                    state = 0
                    if s.state & FT_SAMPLE_IDLE:
                        if running_only:
                            out.f.events += 1
                            continue
                        state = 2 if s.state & FT_SAMPLE_IN_CALL else 1
                    i = slot.get(s.thread, -1)
                    if i < 0:
                        i = slot[s.thread] = len(out._tids)
                        out._tids.append(s.thread)
                    if ft_fold_sample(&out.f, <uint32_t>i,
                                      _tick_ns(s.tick, start_tick, ns_per_tick), s.stack,
                                      fids + starts[s.stack],
                                      <size_t>(starts[s.stack + 1] - starts[s.stack]), w,
                                      state) < 0:
                        raise MemoryError()
                PyErr_CheckSignals()
                if progress is not None:
                    progress(out.f.events)
            ft_rfile_free(&rf)
            rf_open = False
        if progress is not None:
            progress(out.f.events)
    finally:
        if rf_open:
            ft_rfile_free(&rf)
    return out
