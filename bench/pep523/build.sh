#!/usr/bin/env bash
# Build _floor (floor.c) against CPython 3.11 into bench/.venvs/pep523-build/ (git-ignored).
#   bash bench/pep523/build.sh [PYTHON]     default: $(pyenv root)/versions/3.11.7/bin/python
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${1:-$(pyenv root)/versions/3.11.7/bin/python}"
mkdir -p "$here/../.venvs/pep523-build"
out="$(cd "$here/../.venvs/pep523-build" && pwd)"
inc="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
suffix="$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
gcc -O2 -fPIC -shared -Wall -Wextra -I"$inc" "$here/floor.c" -o "$out/_floor$suffix"
echo "$out/_floor$suffix"
