#!/usr/bin/env bash
# Measure every GPU path of softtok in one go, within 9 minutes: k-means (torch, faiss), the heads and the fused soft
# embedding, the ASR trainer and its τ sweep, the HiFi-GAN trainer, nccl DDP under torchrun. Writes GPU.md, gpu.json
# and gpu_check.log to --out-dir (bench/gpu_check.py; bench/GPU.md says how to run it and what it measured).
#
#   bash tools/gpu_check.sh --out-dir "$OUT"            # device machine, carrying .whl (made by tools/gpu_wheels.sh)
#   bash tools/gpu_check.sh --dry-run --out-dir DIR     # tiny sizes on the CPU, about a minute (tests/test_gpu_check.py)
#
# --wheels DIR (default .whl): wheels installed offline with pip into --site DIR (default /tmp/softtok_gpu_site),
# put first on PYTHONPATH; a dry run installs them only with --install. --work DIR keeps the scratch data there.
# Other options go to bench/gpu_check.py. PYTHON (default python3) runs everything.
set -euo pipefail
started=$(date +%s.%N)
invoked="bash tools/gpu_check.sh $*"
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
wheels=.whl site=/tmp/softtok_gpu_site out="" work="" dry=0 install=1 pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out-dir) out=$2; shift 2;;
    --wheels) wheels=$2; shift 2;;
    --site) site=$2; shift 2;;
    --work) work=$2; shift 2;;
    --dry-run) dry=1; install=0; pass+=(--dry-run); shift;;
    --install) force_install=1; shift;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; echo; exec "$PYTHON" bench/gpu_check.py --help;;
    *) pass+=("$1"); shift;;
  esac
done
[ -n "$out" ] || { echo "gpu_check.sh: --out-dir is required (see --help)" >&2; exit 2; }
[ -z "${force_install:-}" ] || install=1
if [ -z "$work" ]; then
  work=$(mktemp -d /tmp/softtok_gpu_check.XXXXXX)
  trap 'rm -rf "$work"' EXIT
fi

record=(--install-status "nothing installed (dry run)")
if [ "$install" = 1 ]; then
  shopt -s nullglob
  found=("$wheels"/*.whl)
  shopt -u nullglob
  if [ ${#found[@]} -eq 0 ]; then
    record=(--install-status "nothing installed: no wheels in $wheels (tools/gpu_wheels.sh makes them)")
  else
    t0=$(date +%s%N)
    status=ok
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
      "${found[@]}" || status="failed (pip exit $?)"
    seconds=$(awk -v ns=$(($(date +%s%N) - t0)) 'BEGIN {printf "%.2f", ns / 1e9}')
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    record=(--installed-from "$wheels" --install-seconds "$seconds" --install-status "$status")
    echo "gpu_check.sh: installed ${#found[@]} wheels from $wheels into $site in ${seconds%.*} s: $status"
  fi
fi
"$PYTHON" bench/gpu_check.py --out-dir "$out" --work "$work" --started-at "$started" "${record[@]}" \
  --invoked-as "$invoked" ${pass[@]+"${pass[@]}"}
