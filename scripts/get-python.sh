#!/usr/bin/env bash
# Provides CPython versions that pyenv lacks here (3.14, 3.15, ...) from Debian sid's binary
# packages, on an amd64 Debian-like host (bookworm and later) that reaches Debian's mirror.
#
#   bash scripts/get-python.sh [--prefix DIR] [--update] [--quiet] VERSION...   e.g. 3.14 3.15
#
# For each VERSION it resolves sid's newest python3.X, its -dev and -venv parts, pip's wheel
# (python3-pip-whl) and the runtime libraries they depend on (glibc included: sid's is newer
# than the host's), unpacks them into DIR/X.Y (default: build/pythons/X.Y in this repository)
# and points the interpreter at that tree's dynamic loader and libraries (patchelf). The host's
# apt sources, lists, cache and dpkg state are not touched: apt runs with its own sources file
# (sid, verified with the host's Debian archive keyring), lists and cache under DIR/.apt and an
# empty dpkg status.  Inside the tree: ensurepip finds the tree's pip wheel (so plain
# `python -m venv` installs a pip that works on the new version), <pyconfig.h> resolves without
# extra include flags, and the static libpython is dropped (extensions never link it).
#
# A second run reuses what is there after checking that it works (no network); --update
# resolves sid's newest packages again and reinstalls a version whose package has changed.
#
# Output, on stdout, one block per VERSION in the order given (progress goes to stderr):
#   PYTHON_VERSION=3.14                          the version asked for; starts each block
#   PYTHON=/abs/DIR/3.14/usr/bin/python3.14      a working interpreter (venvs: `$PYTHON -m venv V`)
#   PYTHON_FULL_VERSION=3.14.10                  platform.python_version()
#   PYTHON_DEB_VERSION=3.14.10-1                 the Debian package's version
#   CFLAGS=-idirafter /abs/DIR/3.14/usr/include  only a fallback: builds work without it
#   PYTHON_ENV=/abs/DIR/3.14/env                 the same lines, shell-quoted, to `source`
# A value is the rest of its line (it may hold spaces; it never holds a newline).
#
# Errors: one line on stderr, `get-python.sh: error: ...`, and the exit status says which:
#   2 usage, 3 sid has no such version, 4 network (mirror unreachable, download failed),
#   5 verification (signature, hash, or the unpacked interpreter fails its checks), 1 other.
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), DEBIAN_KEYRING (default
# /usr/share/keyrings/debian-archive-keyring.gpg), CC (compiler for the header check; cc).
set -euo pipefail

ME=get-python.sh
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEYRING=${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}

die() { local code=$1; shift; echo "$ME: error: $*" >&2; exit "$code"; }
quiet=0
log() { [ "$quiet" = 1 ] || echo "$ME: $*" >&2; }
usage() { sed -n '5p' "$0" | sed 's/^#  *//' >&2; exit 2; }

prefix=$ROOT/build/pythons
update=0
versions=()
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --update) update=1; shift ;;
    -q | --quiet) quiet=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "$ME: error: unknown option $1" >&2; usage ;;
    *) [[ $1 =~ ^3\.[0-9]+$ ]] || die 2 "'$1' is not a CPython minor version such as 3.14"
       versions+=("$1"); shift ;;
  esac
done
[ ${#versions[@]} -gt 0 ] || usage

[ "$(uname -m)" = x86_64 ] || die 1 "only x86_64 (amd64) hosts are supported, this is $(uname -m)"
for tool in apt-get apt-cache dpkg-deb; do
  command -v "$tool" >/dev/null || die 1 "$tool not found: this script needs a Debian-like host"
done
[ -r "$KEYRING" ] || die 5 "keyring $KEYRING not found (apt-get install debian-archive-keyring)"
case $prefix in *'"'* | *$'\n'*) die 2 "--prefix must not contain a quote or a newline" ;; esac
mkdir -p "$prefix" || die 1 "cannot create $prefix"
prefix=$(cd "$prefix" && pwd)

# One run at a time per prefix.
if command -v flock >/dev/null; then
  exec 9>"$prefix/.lock"
  flock 9
fi

# --- private apt -----------------------------------------------------------------------------
apt_dir=$prefix/.apt
apt_conf=$apt_dir/apt.conf
apt_ready=0
apt_setup() {  # writes the private configuration and fetches sid's package index, once a run
  [ "$apt_ready" = 0 ] || return 0
  mkdir -p "$apt_dir"/{lists/partial,cache/archives/partial,state,empty,debs}
  cat >"$apt_dir/sid.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: sid
Components: main
Architectures: amd64
Targets: Packages
Signed-By: $KEYRING
EOF
  # Host apt.conf.d still applies (proxies); sources, preferences, state and hooks are ours.
  cat >"$apt_conf" <<EOF
Dir::Etc::SourceList "$apt_dir/sid.sources";
Dir::Etc::SourceParts "$apt_dir/empty";
Dir::Etc::Preferences "$apt_dir/empty/preferences";
Dir::Etc::PreferencesParts "$apt_dir/empty";
Dir::State "$apt_dir/state";
Dir::State::Lists "$apt_dir/lists";
Dir::State::status "/dev/null";
Dir::Cache "$apt_dir/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Architectures { "amd64"; };
APT::Sandbox::User "root";
APT::Get::AllowUnauthenticated "false";
Acquire::AllowInsecureRepositories "false";
Acquire::Languages "none";
Acquire::Retries "2";
Acquire::http::Timeout "30";
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
EOF
  log "fetching Debian sid's package index from $MIRROR"
  if ! apt-get -c "$apt_conf" -q update --error-on=any >"$apt_dir/update.log" 2>&1; then
    apt_fail "fetching sid's package index from $MIRROR" "$apt_dir/update.log"
  fi
  ls "$apt_dir"/lists/*_sid_main_binary-amd64_Packages* >/dev/null 2>&1 ||
    die 4 "no sid package index under $apt_dir/lists after apt-get update (see $apt_dir/update.log)"
  apt_ready=1
  # sid's index (23 MB) serves this run only: a later run that installs fetches it anew.
  trap 'rm -f "$apt_dir"/lists/*_sid_* "$apt_dir"/lists/lock' EXIT
}

apt_fail() {  # $1: what was being done, $2: apt's log. Exits with the matching status.
  local line
  line=$(grep -m1 -E '^(E|W):' "$2" || tail -n1 "$2")
  if grep -qE 'NO_PUBKEY|EXPKEYSIG|BADSIG|REVKEYSIG|not signed|GPG error|OpenPGP|Hash Sum mismatch|[Ss]ignature' "$2"; then
    die 5 "verification failed while $1 (keyring $KEYRING; if sid is signed by a key newer than it, install a newer debian-archive-keyring and pass DEBIAN_KEYRING=...): $line"
  fi
  if grep -qE 'resolve|[Cc]onnect|Failed to fetch|timed out|Temporary failure|Network is unreachable|Unable to fetch' "$2"; then
    die 4 "network: $1 failed: $line"
  fi
  die 1 "$1 failed: $line (log: $2)"
}

sid_pythons() {  # the python3.X versions sid has, for error messages
  apt-cache -c "$apt_conf" pkgnames python3. 2>/dev/null | sed -n 's/^python\(3\.[0-9]*\)$/\1/p' |
    sort -V | tr '\n' ' '
}

# --- checks ----------------------------------------------------------------------------------
# Every stdlib module that needs a library from the tree, ensurepip with a pip wheel, and the
# prefix the interpreter computes for itself (the tree's usr).
check_script='
import sys, os, sysconfig, platform
import ssl, sqlite3, ctypes, decimal, zlib, lzma, bz2, readline, hashlib, uuid, zoneinfo
import curses, pyexpat, _ctypes, venv, ensurepip
want = sys.argv[1]
assert sys.prefix == want, f"sys.prefix is {sys.prefix}, not {want}"
whl = sysconfig.get_config_var("WHEEL_PKG_DIR")
assert whl and whl.startswith(want), f"WHEEL_PKG_DIR is {whl}"
assert any(n.startswith("pip-") for n in os.listdir(whl)), f"no pip wheel in {whl}"
assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
print(platform.python_version())
'

quick_check() {  # $1: interpreter, $2: its tree's usr. Prints the full version.
  "$1" -I -c "$check_script" "$2" 2>&1
}

full_check() {  # $1: version, $2: interpreter, $3: tree. A venv with pip, and <Python.h>.
  local tmp out rc=0
  tmp=$(mktemp -d)
  if out=$("$2" -m venv "$tmp/venv" 2>&1 && "$tmp/venv/bin/python" -m pip --version 2>&1); then
    log "$1: a venv gets ${out%% from *}"
  else
    echo "$out" | tail -n5 >&2
    rc=1
  fi
  if [ "$rc" = 0 ] && command -v "${CC:-cc}" >/dev/null; then
    printf '#include <Python.h>\nint main(void) { return !Py_IsInitialized(); }\n' >"$tmp/t.c"
    out=$("${CC:-cc}" -fsyntax-only -I"$3/usr/include/python$1" "$tmp/t.c" 2>&1) ||
      { echo "$out" | tail -n5 >&2; rc=1; }
  fi
  rm -rf "$tmp"
  return "$rc"
}

# --- install one version ---------------------------------------------------------------------
install_version() {  # $1: X.Y, $2: the tree to make (replaced whole once it works)
  local v=$1 dest=$2 py=python$1 stage pkgs=() keep=() tools=() name ver section
  local tool_dir sysconfig_files f target t0=$SECONDS
  apt_setup
  ver=$(apt-cache -c "$apt_conf" policy "$py" 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
    die 3 "Debian sid ($MIRROR) has no package $py; it has CPython $(sid_pythons)"
  fi
  log "$v: resolving $py $ver and its dependencies"
  # The dependency closure of what we unpack, resolved against an empty system.
  if ! apt-get -c "$apt_conf" -q -s install --no-install-recommends \
      "$py" "$py-dev" "lib$py-dev" "$py-venv" python3-pip-whl patchelf \
      >"$apt_dir/resolve-$v.log" 2>&1; then
    die 1 "apt cannot resolve $py's dependencies in sid: $(grep -m1 '^E:' "$apt_dir/resolve-$v.log")"
  fi
  mapfile -t pkgs < <(sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) .*/\1=\2/p' "$apt_dir/resolve-$v.log")
  [ ${#pkgs[@]} -gt 0 ] || die 1 "apt resolved nothing for $py (see $apt_dir/resolve-$v.log)"
  # Keep the runtime libraries (Section: libs) and the interpreter's own packages; leave out
  # what the host provides or a private tree does not need (tzdata, ca-certificates, debconf,
  # libc6-dev and other headers, setuptools' wheel, the iconv modules for exotic charsets).
  # patchelf goes to a scratch directory, and runs on the tree's loader and libraries.
  while read -r name section; do
    case $name in
      "$py" | "$py-minimal" | "$py-dev" | "$py-venv" | "lib$py" | "lib$py-minimal" | \
      "lib$py-stdlib" | "lib$py-dev" | python3-pip-whl) keep+=("$name") ;;
      patchelf) tools+=("$name") ;;
      libc-gconv-modules-extra) ;;
      *) [ "$section" = libs ] && keep+=("$name") ;;
    esac
  done < <(apt-cache -c "$apt_conf" show --no-all-versions "${pkgs[@]}" 2>/dev/null |
           awk '/^Package:/ {p = $2} /^Section:/ {print p, $2}')
  for name in "$py" "$py-minimal" "lib$py-stdlib" "lib$py-dev" libc6 python3-pip-whl; do
    [[ " ${keep[*]} " == *" $name "* ]] || die 1 "$name missing from sid's dependency closure of $py"
  done
  local want=()
  for name in "${keep[@]}" "${tools[@]}"; do
    for f in "${pkgs[@]}"; do [ "${f%%=*}" = "$name" ] && want+=("$f"); done
  done
  log "$v: downloading ${#want[@]} packages"
  rm -f "$apt_dir"/debs/*.deb
  if ! (cd "$apt_dir/debs" && apt-get -c "$apt_conf" -q download "${want[@]}") \
      >"$apt_dir/download-$v.log" 2>&1; then
    apt_fail "downloading $py's packages from $MIRROR" "$apt_dir/download-$v.log"
  fi

  stage=$dest.new
  tool_dir=$apt_dir/tools
  rm -rf "$stage" "$tool_dir"
  mkdir -p "$stage" "$tool_dir"
  for name in "${keep[@]}"; do
    dpkg-deb -x "$apt_dir"/debs/"${name}"_*.deb "$stage" ||
      die 5 "cannot unpack ${name}'s package (see $apt_dir/debs)"
  done
  for name in "${tools[@]}"; do dpkg-deb -x "$apt_dir"/debs/"${name}"_*.deb "$tool_dir"; done
  rm -f "$apt_dir"/debs/*.deb

  # The interpreter runs on the tree's loader and finds the tree's libraries first: DT_RPATH
  # (not RUNPATH) so that it also serves the extension modules and anything they dlopen.
  # Two patchelf calls, rpath first: with both in one call, patchelf 0.17+ lays out this
  # non-PIE executable with overlapping segments (it then segfaults at start).
  local loader=$dest/usr/lib64/ld-linux-x86-64.so.2 libdir=$dest/usr/lib/x86_64-linux-gnu
  local pe=("$stage/usr/lib64/ld-linux-x86-64.so.2" --library-path
            "$stage/usr/lib/x86_64-linux-gnu" "$tool_dir/usr/bin/patchelf")
  if ! [ -x "$stage/usr/bin/$py" ] || ! [ -e "${pe[0]}" ]; then
    die 5 "sid's packages have no usr/bin/$py or no loader (see $stage)"
  fi
  if ! "${pe[@]}" --force-rpath --set-rpath "$libdir" "$stage/usr/bin/$py" ||
     ! "${pe[@]}" --set-interpreter "$loader" "$stage/usr/bin/$py"; then
    die 5 "patchelf failed on $stage/usr/bin/$py"
  fi
  rm -rf "$tool_dir"

  # ensurepip takes pip from WHEEL_PKG_DIR: the tree's wheel, not the host's (older) one.
  mapfile -t sysconfig_files < <(grep -l WHEEL_PKG_DIR "$stage/usr/lib/$py"/_sysconfig*__*)
  [ ${#sysconfig_files[@]} -gt 0 ] || die 5 "no sysconfig data with WHEEL_PKG_DIR in $py"
  local esc=${dest//\\/\\\\}
  esc=${esc//|/\\|}
  esc=${esc//&/\\&}
  for f in "${sysconfig_files[@]}"; do
    sed -i -E "s|([\"']WHEEL_PKG_DIR[\"']: [\"'])/usr/share/python-wheels/|\\1$esc/usr/share/python-wheels/|" "$f"
  done
  # Debian's <pythonX.Y/pyconfig.h> includes <x86_64-linux-gnu/pythonX.Y/pyconfig.h>, which a
  # host compiler does not find: make it reachable from the -I of pythonX.Y itself.
  mkdir -p "$stage/usr/include/$py/x86_64-linux-gnu"
  ln -sfn "../../x86_64-linux-gnu/$py" "$stage/usr/include/$py/x86_64-linux-gnu/$py"
  # Absolute symlinks (sitecustomize.py -> /etc/...) point into the tree instead of the host.
  while IFS= read -r -d '' f; do
    target=$(readlink "$f")
    ln -sfn "$(realpath -m --relative-to="$(dirname "$f")" "$stage$target")" "$f"
  done < <(find "$stage" -type l -lname '/*' -print0)
  find "$stage" -name "lib$py*.a" -delete   # static libpython: 27 MB no extension uses

  rm -rf "$dest"
  mv "$stage" "$dest"
  local full
  if ! full=$(quick_check "$dest/usr/bin/$py" "$dest/usr"); then
    echo "$full" | tail -n5 >&2
    rm -rf "$dest"
    die 5 "sid's $py $ver unpacked into $dest does not run or lacks a module (output above)"
  fi
  if ! full_check "$v" "$dest/usr/bin/$py" "$dest"; then
    rm -rf "$dest"
    die 5 "sid's $py $ver in $dest cannot make a venv with pip or compile against <Python.h>"
  fi
  write_env "$v" "$dest" "$full" "$ver"
  log "$v: CPython $full (Debian $ver) ready in $((SECONDS - t0)) s, $(du -sh "$dest" | cut -f1)"
}

q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
write_env() {  # $1: X.Y, $2: tree, $3: full version, $4: Debian version
  local k vals
  vals=(PYTHON_VERSION "$1" PYTHON "$2/usr/bin/python$1" PYTHON_FULL_VERSION "$3"
        PYTHON_DEB_VERSION "$4" CFLAGS "-idirafter $2/usr/include" PYTHON_ENV "$2/env")
  : >"$2/env.new"
  for ((k = 0; k < ${#vals[@]}; k += 2)); do
    printf '%s=%s\n' "${vals[k]}" "$(q "${vals[k + 1]}")" >>"$2/env.new"
  done
  mv "$2/env.new" "$2/env"
}

env_get() {  # $1: env file, $2: key. Its value, unquoted.
  local line val=
  while IFS= read -r line; do
    [ "${line%%=*}" = "$2" ] && eval "val=${line#*=}"
  done <"$1"
  printf '%s' "$val"
}

print_env() {  # $1: env file. Its lines with the values unquoted, on stdout.
  local line val
  while IFS= read -r line; do
    eval "val=${line#*=}"
    printf '%s=%s\n' "${line%%=*}" "$val"
  done <"$1"
}

# --- main ------------------------------------------------------------------------------------
for v in "${versions[@]}"; do
  dest=$prefix/$v
  py=$dest/usr/bin/python$v
  reuse=0
  if [ -f "$dest/env" ]; then
    if full=$(quick_check "$py" "$dest/usr"); then
      reuse=1
      if [ "$update" = 1 ]; then
        apt_setup
        have=$(env_get "$dest/env" PYTHON_DEB_VERSION)
        newest=$(apt-cache -c "$apt_conf" policy "python$v" 2>/dev/null | awk '/Candidate:/ {print $2}')
        if [ -n "$newest" ] && [ "$newest" != "(none)" ] && [ "$newest" != "$have" ]; then
          log "$v: sid has python$v $newest (here: $have): reinstalling"
          reuse=0
        fi
      fi
    else
      log "$v: $dest fails its check, reinstalling: $(echo "$full" | tail -n1)"
    fi
  fi
  if [ "$reuse" = 1 ]; then
    log "$v: reusing $dest (CPython $full)"
  else
    install_version "$v" "$dest"
  fi
  print_env "$dest/env"
done
