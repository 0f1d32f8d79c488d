# Shared helpers for egs/*/*/run.sh: option parsing and skip-if-done stage markers.
# Usage in run.sh: declare defaults, then `. ../../tools/stage.sh "$@"`, then
#   if run_stage 1 "prepare data"; then ...; mark_done 1; fi

# --name value  ->  name=value for every variable already declared by run.sh.
while [ $# -gt 0 ]; do
  case "$1" in
    --*=*) opt=${1%%=*}; opt=${opt#--}; val=${1#*=}; shift ;;
    --*) opt=${1#--}; val=${2:?"missing value for $1"}; shift 2 ;;
    *) echo "$0: unexpected argument '$1'" >&2; exit 1 ;;
  esac
  opt=${opt//-/_}
  if [ -z "${!opt+x}" ]; then echo "$0: unknown option --$opt" >&2; exit 1; fi
  printf -v "$opt" '%s' "$val"
done

# run_stage N DESCRIPTION: true when N is in [stage, stop_stage] and not already done.
run_stage() {
  [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ] || return 1
  if [ -f "$exp_dir/.done/stage$1" ]; then echo "== stage $1 ($2): done, skipping"; return 1; fi
  echo "== stage $1: $2"
}
mark_done() { mkdir -p "$exp_dir/.done" && touch "$exp_dir/.done/stage$1"; }
