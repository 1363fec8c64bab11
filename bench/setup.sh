#!/usr/bin/env bash
# Create the per-version benchmark venvs bench/.venvs/<ver>/ with the peers and fasttrace.
#
#   bash bench/setup.sh [VERSION ...]      # default: 3.11 3.12 3.13
#
# Each venv gets viztracer, trace0 (Python >= 3.13 only) and fasttrace built from this
# repo (`pip install <repo>`). A fasttrace build failure is reported and does not stop
# the script: bench/run.py then lists fasttrace as skipped for that version.
# Env: VIZTRACER_SPEC / TRACE0_SPEC override the pinned peer versions;
#      SKIP_FASTTRACE=1 leaves fasttrace out (e.g. to refresh the peers only).
set -u

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "$bench_dir")
viztracer_spec=${VIZTRACER_SPEC:-viztracer==1.1.1}
trace0_spec=${TRACE0_SPEC:-trace0==0.1.16}
versions=("$@")
[ ${#versions[@]} -eq 0 ] && versions=(3.11 3.12 3.13)

status=0
for ver in "${versions[@]}"; do
    echo "=== Python $ver"
    if ! prefix=$(pyenv prefix "$ver" 2>/dev/null); then
        echo "SKIP $ver: 'pyenv prefix $ver' found no such Python"
        status=1
        continue
    fi
    venv="$bench_dir/.venvs/$ver"
    py="$venv/bin/python"
    if [ ! -x "$py" ]; then
        if ! "$prefix/bin/python" -m venv "$venv"; then
            echo "FAIL $ver: venv creation"
            status=1
            continue
        fi
    fi
    pip=("$py" -m pip install --quiet --disable-pip-version-check)

    "${pip[@]}" "$viztracer_spec" || { echo "FAIL $ver: $viztracer_spec"; status=1; }
    if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 13))'; then
        "${pip[@]}" "$trace0_spec" || { echo "FAIL $ver: $trace0_spec"; status=1; }
    else
        echo "note: trace0 needs Python >= 3.13, not installed for $ver"
    fi

    if [ "${SKIP_FASTTRACE:-0}" = 1 ]; then
        echo "note: SKIP_FASTTRACE=1, fasttrace left as it is"
        continue
    fi
    # Uninstall first so that a failed build never leaves a stale fasttrace being measured.
    "$py" -m pip uninstall --quiet --yes fasttrace >/dev/null 2>&1
    log="$venv/fasttrace-install.log"
    if "${pip[@]}" --no-deps "$repo_dir" >"$log" 2>&1; then
        echo "fasttrace installed for $ver"
    else
        echo "WARN $ver: fasttrace did not build/install; run.py will skip it." \
            "Log: ${log#"$repo_dir"/}"
        tail -n 5 "$log" | sed 's/^/    /'
    fi
done
exit $status
