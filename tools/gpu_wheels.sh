#!/usr/bin/env bash
# Download the wheels that tools/gpu_check.sh installs on the device machine (tools/gpu_wheels.txt; CPython 3.12,
# manylinux x86_64) into .whl/ (ignored by git), then check that they and the working tree fit the 64 MiB a device
# call carries. Run it here, where the package index is reachable: the device machine reaches nothing.
#
#   bash tools/gpu_wheels.sh                                  # .whl/ from tools/gpu_wheels.txt
#   bash tools/gpu_wheels.sh --probe faiss-gpu==1.15.1 ...    # each wheel's size and the CUDA libraries its shared
#                                                             # objects name; nothing is kept
# PYTHON (default python3) runs pip.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LIMIT_MIB=64
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

download() {  # DEST SPEC...: the wheels themselves, no dependencies (gpu_wheels.txt names each one needed)
  local dest=$1
  shift
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$dest" "$@"
}

case "${1:-}" in
  -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
  --probe)
    shift
    probe=$(mktemp -d)
    trap 'rm -rf "$probe"' EXIT
    download "$probe" "$@"
    "$PYTHON" - "$probe" <<'PY'
import re, sys, zipfile
from pathlib import Path

for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    names = set()
    with zipfile.ZipFile(wheel) as z:
        for member in (m for m in z.namelist() if re.search(r"\.so(\.|$)", m)):
            names |= {n.decode() for n in re.findall(rb"lib(?:cu[a-zA-Z]+|nvrtc|nccl)\w*\.so\.\d+", z.read(member))}
    print(f"{wheel.name}: {wheel.stat().st_size / 2 ** 20:.1f} MiB; CUDA libraries named: "
          f"{', '.join(sorted(names)) or 'none'}")
PY
    exit 0;;
  "") ;;
  *) echo "gpu_wheels.sh: unknown option $1 (see --help)" >&2; exit 2;;
esac

mapfile -t specs < <(sed 's/#.*//; s/[[:space:]]//g; /^$/d' tools/gpu_wheels.txt)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
download "$tmp" "${specs[@]}"
got=$(find "$tmp" -name '*.whl' | wc -l)
[ "$got" -eq "${#specs[@]}" ] || { echo "gpu_wheels.sh: ${#specs[@]} specs gave $got wheels" >&2; exit 1; }
rm -rf .whl
mkdir .whl
mv "$tmp"/*.whl .whl/
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"

tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | awk 'END {print $1}')
wheels=$(du -cb .whl/*.whl | awk 'END {print $1}')
total=$((tree + wheels))
awk -v n="$got" -v w="$wheels" -v t="$tree" -v limit="$LIMIT_MIB" 'BEGIN {m = 1048576; printf "gpu_wheels.sh: %d wheels, \
%.1f MiB in .whl/; with the working tree (%.1f MiB) %.1f MiB of the %d MiB a call carries\n", n, w / m, t / m, (w + t) / m, limit}'

if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "gpu_wheels.sh: over the limit: carry fewer wheels" >&2
  exit 1
fi
