"""Type stub for the compiled module fasttrace._core (src/_core.pyx)."""

from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

USE_MONITORING: bool
HAS_EVAL_FRAME: bool
FORMAT_VERSION: int
FORMAT_VERSION_MIN: int
FORMAT_VERSION_MAX: int
CHUNK_HEADER_SIZE: int
ORIGINS: Dict[int, str]

def hooks_init() -> None: ...
def session_start(
    fd: int,
    c_calls: bool,
    hook: int,
    chunk_size: int,
    n_chunks: int,
    command_line: bytes,
    python_version: str,
    python_version_hex: int,
    sample: bool = ...,
    path: str = ...,
    hook_fallback: bool = ...,
    flight_max_bytes: Optional[int] = ...,
    flight_seconds: float = ...,
    series: Optional[Tuple[str, str, int, float, int]] = ...,
) -> None: ...
def hooks_retain(threading_active: Any, disable: Any, marker: Any) -> None: ...
def hooks_release() -> None: ...
def find_profiled_thread() -> int: ...
def install_monitoring(
    set_events: Callable[[int, int], None], tool: int, events: int, skip_current: bool = ...
) -> None: ...
_Callback = Callable[..., Any]

def monitoring_callbacks() -> Tuple[_Callback, _Callback, _Callback, _Callback]: ...
def install_legacy(skip_current: bool = ...) -> None: ...
def remove_legacy() -> None: ...
def legacy_bootstrap() -> Callable[..., Any]: ...
def install_eval_frame() -> bool: ...
def remove_eval_frame() -> None: ...
def eval_frame_taken() -> bool: ...

HOOK_PROFILE: int
HOOK_MONITORING: int
HOOK_EVAL_FRAME: int
HOOK_SAMPLER: int
HOOK_NAMES: Dict[int, str]
def set_own_files(files: Tuple[str, ...]) -> None: ...
def check_hooks() -> None: ...
def lose_hooks(what: str) -> None: ...
def run_unmuted(code: Any, globals: Dict[str, Any]) -> Any: ...
def mute_returns(returns: int) -> None: ...
def wrap_thread_start(original: Callable[..., Any], thread_class: Optional[type],
                      install_hook: bool) -> Callable[..., Any]: ...
def set_thread_name(ident: int, name: str) -> None: ...
def session_quiesce() -> None: ...
def session_finish() -> Dict[str, Any]: ...

MAX_STOP_CODES: int
MAX_SAMPLE_DEPTH: int
CLOCK_WALL: int
CLOCK_CPU: int
SAMPLER_STATS: Tuple[str, ...]

def name_sampled_thread(ident: int, name: str, native_id: Optional[int],
                        force: bool = ..., after_uid: int = ...) -> None: ...
def last_thread_uid() -> int: ...
LAYOUT_FIELDS: Tuple[str, ...]

class LayoutError(Exception): ...

def sampler_check_layout() -> Optional[str]: ...
def sampler_start(rate: float, clock: int, call_opcodes: bytes,
                  stop_codes: Tuple[Any, ...]) -> None: ...
def sampler_release() -> None: ...
def session_abandon() -> None: ...
def session_flush_threads() -> None: ...
def flight_dump(fd: int) -> Dict[str, int]: ...

class Function:
    id: int
    name: str
    qualname: str
    filename: str
    lineno: int
    module: str
    is_c: bool

class Thread:
    id: int
    ident: Optional[int]
    native_id: Optional[int]
    name: str

class Event:
    kind: str
    ts: int
    thread: int
    function: Function
    synthetic: bool
    dropped: int
    start_ts: int

class Sample:
    ts: int
    thread: int
    stack: Tuple[Function, ...]
    idle: bool
    in_call: bool
    torn: bool
    weight_ns: int

TRUNCATED: Function

class TraceFile:
    path: str
    header: Dict[str, Any]
    functions: List[Optional[Function]]
    threads: Dict[int, Thread]
    truncated: bool
    damage: Optional[str]
    complete: bool
    trailer_events: Optional[int]
    trailer_dropped: Optional[int]
    chunk_events: int
    thread_records: Dict[int, int]
    writer_error: Optional[int]
    lost_threads: int
    hook_lost: List[Tuple[int, int, str]]
    hook_lost_ticks: List[Tuple[int, int, str]]
    duration_ns: int
    version: int
    series_index: int
    series_id: int
    fid_kinds: bytearray
    function_def_ends: List[Optional[int]]
    stack_def_ends: List[Optional[int]]
    def __init__(self, path: Any) -> None: ...
    stacks: List[Tuple[Function, ...]]
    sampling: Optional[Dict[str, Any]]
    def timeline(self) -> Tuple[int, float, int]: ...
    def events(self, thread: Optional[int] = ..., gaps: bool = ...) -> Iterator[Event]: ...
    def samples(self, thread: Optional[int] = ...) -> Iterator[Sample]: ...
    def close(self) -> None: ...

def read_header(path: Any) -> Dict[str, Any]: ...
def series_timeline(files: List[TraceFile]) -> Tuple[int, float, int]: ...
def tick_ns(tick: int, start_tick: int, ns_per_tick: float) -> int: ...
def series_events(files: List[TraceFile], breaks: List[bool], functions: List[Any],
                  fid_kind: bytearray, start_tick: int, ns_per_tick: float, end_tick: int,
                  thread: Optional[int] = ..., gaps: bool = ...) -> Iterator[Event]: ...
def series_samples(files: List[TraceFile], stacks: List[Any], threads: Dict[int, Thread],
                   start_tick: int, ns_per_tick: float,
                   thread: Optional[int] = ...) -> Iterator[Sample]: ...

# ---- the call-tree fold (_fold.pxi) ----

class TooManySlices(ValueError): ...

class Fold:
    events: int
    def threads(self) -> List[Tuple[int, int, int, int, int, int, int, int, int]]: ...
    def tree(self, tid: int) -> Dict[str, bytes]: ...
    def query(self, tid: int, t0: int, t1: int, res: int, states: bool = ...,
              node_base: int = ..., limit: int = ...
              ) -> Tuple[bytearray, bytearray, bytearray, bytearray]: ...
    def child(self, tid: int, parent: int, fid: int) -> int: ...
    def slice_open(self, tid: int, node: int, ts: int) -> None: ...
    def slice_close(self, tid: int, ts: int) -> None: ...
    def add_state(self, tid: int, start: int, end: int, state: int) -> None: ...
    def finish(self) -> None: ...
    def gaps(self, tid: int) -> List[Tuple[int, int, int]]: ...
    def functions(self, tid: int) -> List[Tuple[int, int, int, int]]: ...
    kept_bytes: int
    finest_level: int

def fold_events(files: List[TraceFile], breaks: List[bool], fid_kind: bytearray,
                start_tick: int, ns_per_tick: float, end_tick: int, slices: bool = ...,
                w0: Optional[int] = ..., w1: Optional[int] = ...,
                progress: Optional[Callable[[int], None]] = ..., budget: int = ...) -> Fold: ...
def fold_samples(files: List[TraceFile], flat: bytes, offsets: bytes, start_tick: int,
                 ns_per_tick: float, w0: Optional[int] = ..., w1: Optional[int] = ...,
                 progress: Optional[Callable[[int], None]] = ...,
                 running_only: bool = ...) -> Fold: ...
