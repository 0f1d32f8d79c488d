# Shared helpers for egs/*/*/run.sh: option parsing and skip-if-done stage markers.
# Usage in run.sh: declare defaults, then `. ../../tools/stage.sh "$@"`, then
#   commands_log "$exp_dir/commands.txt" "egs/<corpus>/<task>/run.sh" "$@"
#   if run_stage 1 "prepare data"; then log $softtok prepare ...; mark_done 1; fi

# Every recipe also takes --cmd local|slurm and --slurm_conf FILE (for run_sharded, below).
cmd=${cmd:-local}
slurm_conf=${slurm_conf:-${BASH_SOURCE[0]%/*}/slurm.yaml}

# --name value  ->  name=value for every variable already declared by run.sh. The options that change what a stage
# writes (all but where to start and stop and how to run jobs) are its settings: a stage marker holds them.
stage_settings=""
while [ $# -gt 0 ]; do
  case "$1" in
    --*=*) opt=${1%%=*}; opt=${opt#--}; val=${1#*=}; shift ;;
    --*) opt=${1#--}; val=${2:?"missing value for $1"}; shift 2 ;;
    *) echo "$0: unexpected argument '$1'" >&2; exit 1 ;;
  esac
  opt=${opt//-/_}
  if [ -z "${!opt+x}" ]; then echo "$0: unknown option --$opt" >&2; exit 1; fi
  printf -v "$opt" '%s' "$val"
  case "$opt" in stage|stop_stage|cmd|slurm_conf|nj|train_nj) ;; *) stage_settings+="$opt=$val"$'\n' ;; esac
done

# run_stage N DESCRIPTION: true when N is in [stage, stop_stage] and not already done with these settings (the
# marker records the options it ran with; other options run it again, and its verbs then reuse what their own
# fingerprints say is unchanged). Defaults edited inside run.sh are not settings: remove the marker to redo a stage.
run_stage() {
  [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ] || return 1
  local marker="$exp_dir/.done/stage$1"
  if [ -f "$marker" ]; then
    if [ "$(cat "$marker")" = "$(settings_text)" ]; then echo "== stage $1 ($2): done, skipping"; return 1; fi
    echo "== stage $1: $2 (done before with other options: running again)"
    return 0
  fi
  echo "== stage $1: $2"
}
# settings_text: the settings one per line, sorted (their order on the command line does not matter).
settings_text() { printf '%s' "$stage_settings" | LC_ALL=C sort; }
mark_done() { mkdir -p "$exp_dir/.done" && settings_text > "$exp_dir/.done/stage$1.tmp.$$" &&
  mv "$exp_dir/.done/stage$1.tmp.$$" "$exp_dir/.done/stage$1"; }

# export_bundles N MODEL...: stage N packs each trained model into $exp_dir/bundles/<model> (softtok export: all that
# softtok transcribe / resynthesize / softtok.load need), the recipes' last stage.
export_bundles() {
  local n=$1 model; shift
  if run_stage "$n" "export bundles: $*"; then
    for model in "$@"; do log ${softtok:-softtok} export "$exp_dir/$model" --out-dir "$exp_dir/bundles/$model" --overwrite; done
    mark_done "$n"
  fi
}

# record CMD ARGS...: append the command to $cmds as RESULTS.md lists it: the program by its name, every absolute
# path (also in --opt=PATH and comma lists) relative to the recipe folder (the cwd), so no machine path is kept.
record() { "${py:-python}" -m softtok.recipes.naming relative-command -- "$@" >> "$cmds"; }
# commands_log FILE SCRIPT ARGS...: append "# <UTC time> SCRIPT ARGS" to FILE (the log RESULTS.md lists) and
# remember it as $cmds.
commands_log() {
  cmds=$1; shift; mkdir -p "$(dirname "$cmds")"; printf '# %s ' "$(date -u +%FT%TZ)" >> "$cmds"; record "$@"
}
# log CMD ARGS...: record the command in $cmds, echo it, run it (with its arguments as given).
log() { [ -z "${cmds:-}" ] || record "$@"; echo "+ $*"; "$@"; }

# run_sharded NAME CMD ARGS...: a sharded dump (softtok dump-features / dump-tokens) on $nj shards, as
# $nj local processes (cmd=local: CMD ARGS --nj $nj) or a Slurm array of $nj tasks, then the merge (cmd=slurm:
# resources from $slurm_conf, script and task logs in $exp_dir/log/NAME.*; see softtok launch --help).
run_sharded() {
  local name=$1; shift
  if [ "$cmd" = local ]; then log "$@" --nj "$nj"; return; fi
  log "${py:-python}" -m softtok.cli launch --cmd "$cmd" --nj "$nj" --log-dir "$exp_dir/log" --name "$name" \
    --slurm-conf "$slurm_conf" -- "$@"
}

# log_bg CMD ARGS...: as log, but in the background, keeping at most $train_nj (default 1) jobs running;
# wait_bg: wait for them all, failing if any failed. (On 2 cores, 1-thread jobs side by side beat one
# 2-thread job, whose OpenMP threads stall whenever another process takes a core.)
bg_pids=()
log_bg() {
  while [ "$(jobs -rp | wc -l)" -ge "${train_nj:-1}" ]; do wait -n || { wait; return 1; }; done
  record "$@"; echo "+ $* &"; "$@" & bg_pids+=($!)
}
wait_bg() { local pid rc=0; for pid in "${bg_pids[@]}"; do wait "$pid" || rc=1; done; bg_pids=(); return $rc; }
