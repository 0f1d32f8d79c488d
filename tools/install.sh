#!/usr/bin/env bash
# Create (or reuse) the project venv and link it as ./.venv.
# The venv lives in a cache keyed on setup.cfg + pyproject.toml, so an unchanged dependency set
# is installed once per machine; softtok itself is always re-linked (editable) to this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
key=$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)
venv=${SOFTTOK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/softtok/venv-$key}
extras=${SOFTTOK_EXTRAS:-test,whisper,vocoder}
if [ ! -f "$venv/.complete-$extras" ]; then
  echo "install.sh: creating $venv with extras [$extras] (first time: several GB, minutes)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # pip >= 25 refuses espnet's ci_sdr dependency (a direct-URL extra); 23.2.1 installs it.
  "$venv/bin/python" -m pip install -q "pip==23.2.1"
  "$venv/bin/python" -m pip install -q -e ".[$extras]"
  touch "$venv/.complete-$extras"
else
  "$venv/bin/python" -m pip install -q --no-deps -e .
fi
ln -sfn "$venv" .venv
echo "install.sh: ready: $(.venv/bin/python -c 'import softtok, torch; print("softtok", softtok.__version__, "torch", torch.__version__)')"
