#!/usr/bin/env bash
# Install softtok for THIS checkout as ./.venv, over a dependency venv shared by every checkout on the machine.
#
#   bash tools/install.sh                  # dependencies once per machine, then this checkout's ./.venv
#   bash tools/install.sh --requirements   # print the dependency list it installs (SOFTTOK_EXTRAS) and exit
#
# SOFTTOK_EXTRAS (default test,whisper,vocoder): setup.cfg extras; SOFTTOK_VENV: the dependency venv to use instead
# of ~/.cache/softtok/venv-<hash of setup.cfg + pyproject.toml> (a finished one is never wiped; missing extras added).
#
# Why this layout: the dependencies (torch with CUDA, espnet, ...) are several GB, so they live once per machine in the
# cached venv, which holds NO softtok (pip installs setup.cfg's requirements, not the project). softtok is per checkout:
# ./.venv is a small venv of the same base python whose site-packages has softtok.pth, naming this checkout's root
# (as PYTHONPATH=$PWD does) and then the shared site-packages (its .pth files run too, except a softtok editable
# install the old install.sh left there). Its bin/ holds `softtok` and every console script of the shared venv
# (torchrun, pytest, ...) re-pointed at ./.venv/bin/python, so PATH=$PWD/.venv/bin and subprocesses started with
# sys.executable run this checkout's code. Chosen over an editable install into the small venv: no pip, setuptools or
# network, under a second, and no editable finder of another checkout that could serve modules missing here. Running
# it writes only ./.venv (and the shared venv while building it), so it never changes what another checkout runs.
set -euo pipefail
[ -z "${SOFTTOK_VENV:-}" ] || SOFTTOK_VENV=$(realpath -m -- "$SOFTTOK_VENV")
cd "$(dirname "$0")/.."
root=$PWD
dot=$root/.venv
key=$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)
venv=${SOFTTOK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/softtok/venv-$key}
extras=${SOFTTOK_EXTRAS:-test,whisper,vocoder}

requirements() {  # setup.cfg's install_requires and the requirements of $extras (softtok[x] followed), one a line
  python3 - "$extras" <<'PY'
import configparser, re, sys

cfg = configparser.ConfigParser(interpolation=None)
cfg.read("setup.cfg")


def lines(value):
    return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


extras = {name: lines(value) for name, value in cfg["options.extras_require"].items()}
self_ref = re.compile(rf"{re.escape(cfg['metadata']['name'])}\[([^\]]*)\]")
out, seen = lines(cfg["options"]["install_requires"]), set()


def add(names):
    for name in (n.strip() for n in names if n.strip() and n.strip() not in seen):
        seen.add(name)
        if name not in extras:
            sys.exit(f"install.sh: setup.cfg: no extra [{name}] in [options.extras_require]")
        for req in extras[name]:
            match = self_ref.fullmatch(req.replace(" ", ""))
            if match:
                add(match.group(1).split(","))
            else:
                out.append(req)


add(sys.argv[1].split(","))
print("\n".join(dict.fromkeys(out)))
PY
}

covered() {  # true when a .complete-<extras> marker of $venv names every extra asked for
  local marker have extra
  for marker in "$venv"/.complete-*; do
    [ -f "$marker" ] || continue
    have=,${marker##*/.complete-},
    for extra in ${extras//,/ }; do
      case $have in *,"$extra",*) ;; *) continue 2;; esac
    done
    return 0
  done
  return 1
}

build_deps() {  # the dependencies, never softtok, into $venv: added to a finished venv, else into a fresh one
  local reqs
  if ! compgen -G "$venv/.complete-*" >/dev/null; then
    if [ -n "${SOFTTOK_VENV:-}" ] && [ -e "$venv" ]; then
      echo "install.sh: SOFTTOK_VENV=$venv is no finished dependency venv (no .complete-* file); not wiping it" >&2
      exit 1
    fi
    echo "install.sh: creating $venv with extras [$extras] (first time: several GB, minutes)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    # pip >= 25 refuses espnet's ci_sdr dependency (a direct-URL extra); 23.2.1 installs it.
    "$venv/bin/python" -m pip install -q "pip==23.2.1"
  else
    echo "install.sh: adding extras [$extras] to $venv"
  fi
  reqs=$(mktemp)
  requirements > "$reqs"
  "$venv/bin/python" -m pip install -q -r "$reqs"
  rm -f "$reqs"
  touch "$venv/.complete-$extras"
}

put() {  # DEST [MODE]: stdin to DEST through a temp file and a rename, so no reader sees it half-written
  pending=$1.tmp.$$
  cat > "$pending"
  chmod "${2:-644}" "$pending"
  mv -f "$pending" "$1"
}
trap 'rm -f "${pending:-}"' EXIT

layer() {  # ./.venv: a small venv over $venv whose softtok is this checkout's
  local base deps_site site real src name head made=" softtok "
  [ ! -L "$dot" ] || rm "$dot"  # the old layout: a link to the shared venv
  base=$(grep '^home' "$venv/pyvenv.cfg")
  if [ ! -x "$dot/bin/python" ] || [ "$(grep '^home' "$dot/pyvenv.cfg" 2>/dev/null)" != "$base" ]; then
    "$venv/bin/python" -m venv --clear --without-pip \
      $(grep -q 'include-system-site-packages *= *true' "$venv/pyvenv.cfg" && echo --system-site-packages) "$dot"
  fi
  deps_site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  site=$("$dot/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  put "$site/_softtok_deps.py" <<'PY'
"""Put the shared dependency venv under this checkout's .venv (written by tools/install.sh, run from softtok.pth)."""
import os
import site
import sys


def add(sitedir: str) -> None:
    """Append ``sitedir`` to sys.path and run its .pth files, except a softtok install left there by old installs."""
    if not os.path.isdir(sitedir):
        sys.stderr.write(f"softtok: dependency venv {sitedir} is missing; rerun tools/install.sh\n")
        return
    known = {os.path.normcase(os.path.abspath(path)) for path in sys.path if path}
    if os.path.normcase(os.path.abspath(sitedir)) in known:
        return  # site runs a venv's .pth files twice (its venv and site-packages steps)
    sys.path.append(sitedir)
    for name in sorted(os.listdir(sitedir)):
        if name.endswith(".pth") and not name.startswith("__editable__.softtok-"):
            site.addpackage(sitedir, name, known)
PY
  printf '%s\nimport _softtok_deps; _softtok_deps.add(%s)\n' "$root" "'$deps_site'" | put "$site/softtok.pth"
  printf '#!%s\nimport sys\n\nfrom softtok.cli import main\n\nif __name__ == "__main__":\n    sys.exit(main())\n' \
    "$dot/bin/python" | put "$dot/bin/softtok" 755
  real=$(realpath "$venv")
  for src in "$venv"/bin/*; do
    name=${src##*/}
    case $name in python*|activate*|Activate.ps1|softtok) continue;; esac
    head=$(head -n 3 "$src" | tr -d '\0')  # whole, not piped into grep -q (pipefail would see a SIGPIPE)
    grep -qF -e "$venv/bin/python" -e "$real/bin/python" <<< "$head" || continue
    { sed -e "1,3s|$venv/bin/python[0-9.]*|$dot/bin/python|" -e "1,3s|$real/bin/python[0-9.]*|$dot/bin/python|" "$src"
      echo "# console script of $venv, by tools/install.sh"; } | put "$dot/bin/$name" 755
    made+="$name "
  done
  for src in "$dot"/bin/*; do  # console scripts of an earlier dependency venv that this one lacks
    case $made in *" ${src##*/} "*) continue;; esac
    ! grep -q '^# console script of .*, by tools/install.sh$' "$src" || rm -f "$src"
  done
  echo "$venv" | put "$dot/softtok-deps"
}

case "${1:-}" in
  -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
  --requirements) requirements; exit 0;;
  "") ;;
  *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2;;
esac
if [ -f "$venv/softtok-deps" ]; then  # SOFTTOK_VENV named a checkout's .venv: use its dependency venv
  venv=$(cat "$venv/softtok-deps")
fi
if ! covered; then
  mkdir -p "$(dirname "$venv")"
  exec 9> "$venv.lock"
  ! command -v flock > /dev/null || flock 9  # a second checkout waits for the first to finish building
  covered || build_deps
fi
layer
(cd / && env -u PYTHONPATH "$dot/bin/python" - "$root" <<'PY')
import sys
from importlib import metadata
from pathlib import Path

import softtok

where = Path(softtok.__file__).resolve().parent
if where != Path(sys.argv[1]).resolve() / "softtok":
    sys.exit(f"install.sh: .venv imports softtok from {where}, not from this checkout")
try:
    torch = f"torch {metadata.version('torch')} from {metadata.distribution('torch').locate_file('')}"
except metadata.PackageNotFoundError:
    torch = "no torch"
print(f"install.sh: ready: softtok {softtok.__version__} from {where}, {torch}")
PY
