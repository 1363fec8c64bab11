#!/usr/bin/env bash
# Build the _ftsample prototype for each given Python (default: 3.12.1 3.13.0 from pyenv).
# Output: bench/.venvs/sampling-build/<major.minor>/_ftsample<EXT_SUFFIX>  (git-ignored)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out_root="$here/../.venvs/sampling-build"
versions=("$@")
[ ${#versions[@]} -eq 0 ] && versions=(3.12.1 3.13.0)
for v in "${versions[@]}"; do
    py="$(pyenv root)/versions/$v/bin/python3"
    inc="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    suf="$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
    mm="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    mkdir -p "$out_root/$mm"
    gcc -O2 -g -Wall -Wno-unused-function -fPIC -shared -pthread -I"$inc" \
        "$here/ftsample.c" -o "$out_root/$mm/_ftsample$suf"
    echo "built $out_root/$mm/_ftsample$suf"
done
