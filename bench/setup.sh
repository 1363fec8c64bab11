#!/usr/bin/env bash
# Create the per-version benchmark venvs bench/.venvs/<ver>/ with the peers and fasttrace.
#
#   bash bench/setup.sh [VERSION ...]      # default: 3.11 3.12 3.13; 3.14 and 3.15 work too
#
# Each venv is made from pyenv's interpreter of that version or, where pyenv has none (3.14,
# 3.15), from the one scripts/get-python.sh unpacks into build/pythons/ (Debian sid's build).
# Each venv gets viztracer, trace0 (Python >= 3.13 only), the sampling peers pyinstrument and
# py-spy (for bench/sampling_overhead.py), and fasttrace built from this repo
# (`pip install <repo>`). A fasttrace build failure is reported and does not stop
# the script: bench/run.py then lists fasttrace as skipped for that version. So does a peer
# that does not install (say, no support for that Python yet): its pip output goes to
# <venv>/<peer>-install.log, the last lines are printed, and run.py lists it as skipped.
# Env: VIZTRACER_SPEC / TRACE0_SPEC / PYINSTRUMENT_SPEC / PYSPY_SPEC override the pinned
#      peer versions;
#      SKIP_FASTTRACE=1 leaves fasttrace out (e.g. to refresh the peers only);
#      FASTTRACE_REV=<commit> builds fasttrace from a clean `git archive` of that commit instead
#      of the working tree (reproducible numbers while the tree is being edited).
# Each venv's fasttrace-source.txt says what its fasttrace was built from.
set -u

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "$bench_dir")
viztracer_spec=${VIZTRACER_SPEC:-viztracer==1.1.1}
trace0_spec=${TRACE0_SPEC:-trace0==0.1.16}
pyinstrument_spec=${PYINSTRUMENT_SPEC:-pyinstrument==5.1.3}
pyspy_spec=${PYSPY_SPEC:-py-spy==0.4.3}
versions=("$@")
[ ${#versions[@]} -eq 0 ] && versions=(3.11 3.12 3.13)

fasttrace_src=$repo_dir
source_note="working tree at $(git -C "$repo_dir" describe --always --dirty 2>/dev/null || echo '?')"
if [ -n "${FASTTRACE_REV:-}" ] && [ "${SKIP_FASTTRACE:-0}" != 1 ]; then
    commit=$(git -C "$repo_dir" rev-parse --verify "$FASTTRACE_REV^{commit}") || exit 1
    fasttrace_src=$(mktemp -d)
    trap 'rm -rf "$fasttrace_src"' EXIT
    git -C "$repo_dir" archive "$commit" | tar -x -C "$fasttrace_src" || exit 1
    source_note="commit $commit (git archive)"
fi

# The interpreter for VERSION: pyenv's, else scripts/get-python.sh's (which downloads it once).
base_python() {
    local prefix line
    if prefix=$(pyenv prefix "$1" 2>/dev/null) && [ -x "$prefix/bin/python" ]; then
        echo "$prefix/bin/python"
        return 0
    fi
    echo "note: pyenv has no $1, trying scripts/get-python.sh $1" >&2
    line=$(bash "$repo_dir/scripts/get-python.sh" --quiet "$1" | grep '^PYTHON=') || return 1
    echo "${line#PYTHON=}"
}

# pip install SPEC into the venv; on failure, the tail of pip's output and a FAIL line.
peer_install() {
    local spec=$1 name=${1%%[=<>!~ ]*}
    local log="$venv/$name-install.log"
    if "${pip[@]}" "$spec" >"$log" 2>&1; then
        rm -f "$log"
        return 0
    fi
    echo "FAIL $ver: $spec did not install; run.py will skip it. Log: ${log#"$repo_dir"/}"
    grep -v '^ *$' "$log" | tail -n 6 | sed 's/^/    /'
    status=1
    return 1
}

status=0
for ver in "${versions[@]}"; do
    echo "=== Python $ver"
    venv="$bench_dir/.venvs/$ver"
    py="$venv/bin/python"
    if [ ! -x "$py" ]; then
        if ! base=$(base_python "$ver"); then
            echo "SKIP $ver: neither pyenv nor scripts/get-python.sh has CPython $ver"
            status=1
            continue
        fi
        if ! "$base" -m venv "$venv"; then
            echo "FAIL $ver: venv creation from $base"
            status=1
            continue
        fi
    fi
    echo "interpreter: CPython $("$py" -c 'import os, platform, sys
print(platform.python_version(), "from", os.path.realpath(sys.executable))')"
    pip=("$py" -m pip install --disable-pip-version-check)

    peer_install "$viztracer_spec"
    if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 13))'; then
        peer_install "$trace0_spec"
    else
        echo "note: trace0 needs Python >= 3.13, not installed for $ver"
    fi
    for spec in "$pyinstrument_spec" "$pyspy_spec"; do
        peer_install "$spec"
    done
    # The services bench/http_service.py runs (tests/services).
    for spec in flask gunicorn starlette uvicorn; do
        peer_install "$spec"
    done

    if [ "${SKIP_FASTTRACE:-0}" = 1 ]; then
        echo "note: SKIP_FASTTRACE=1, fasttrace left as it is"
        continue
    fi
    # Uninstall first so that a failed build never leaves a stale fasttrace being measured.
    "$py" -m pip uninstall --quiet --yes fasttrace >/dev/null 2>&1
    log="$venv/fasttrace-install.log"
    rm -f "$venv/fasttrace-source.txt"
    if "${pip[@]}" --quiet --no-deps "$fasttrace_src" >"$log" 2>&1; then
        echo "$source_note" >"$venv/fasttrace-source.txt"
        echo "fasttrace installed for $ver from $source_note"
    else
        echo "WARN $ver: fasttrace did not build/install; run.py will skip it." \
            "Log: ${log#"$repo_dir"/}"
        tail -n 5 "$log" | sed 's/^/    /'
    fi
done
exit $status
