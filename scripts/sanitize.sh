#!/usr/bin/env bash
# Builds fasttrace with AddressSanitizer and UndefinedBehaviorSanitizer and runs the test suite
# against it.  CPython itself is not instrumented, so libasan is preloaded and leak checking is
# off (the interpreter keeps memory until exit by design).
#   PYTHON=python3.12 bash scripts/sanitize.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
venv=build/asan-venv
rm -rf "$venv"
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
FASTTRACE_SANITIZE=1 "$venv/bin/python" -m pip install -q ".[test]"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Fuzzing examples are cut down: under ASan each is ~3x slower.
PATH="$venv/bin:$PATH" FASTTRACE_SANITIZE=1 FASTTRACE_FUZZ_EXAMPLES=${FASTTRACE_FUZZ_EXAMPLES:-100} pytest "$@"
