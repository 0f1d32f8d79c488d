# Stages 3-8 of the token-ASR recipes (egs/*/asr/run.sh), shared: features -> k-means -> ASR on hard tokens
# (+ continuous, + soft/soft) -> τ sweep on dev -> decoding of every set (τ*, label-free τ) -> results.json / RESULTS.md.
# Source it from run.sh after stage.sh and the corpus's own data stages (1-2), with these set:
#   feature feature_opts   featurizer name and extra dump-features options (e.g. "--checkpoint C --layer 21")
#   train_set dev_set      data/<train_set> trains (and feeds k-means), data/<dev_set> validates and picks τ
#   test_sets subsets      sets decoded after dev; results --subsets items (SET:NAME=DIR), may be empty
#   tokenizer              kmeans (default) | dmel (fbank log-mel channels binned; ks = bins per channel)
#   ks km_portion train_conf train_nj soft_train_factor tau_factors search nj
#   py data dump exp_dir results_dir (and $cmds from commands_log)
# and defines rankme_layers (below) for the recipes' RankMe-per-layer stage.
#   layers                 optional: empty (default) = one stream in $dump/$feature; "L1 L2 ..." = one token stream per
#                          SSL layer (feature_opts then has --layer L1,L2,...): $dump/${feature}_l<L>, a k-means per
#                          layer and K, models trained and decoded on the comma lists (one embedding table per layer)

softtok="$py -m softtok.cli"
feats=$dump/$feature
tokenizer=${tokenizer:-kmeans}
layers=${layers:-}
if [ -n "$layers" ] && [ "$tokenizer" = dmel ]; then echo "asr_stages.sh: layers needs tokenizer=kmeans" >&2; exit 1; fi
feat_dirs=$feats; dump_out=$feats   # one folder per stream; dump-features --out-dir ({layer} filled in per layer)
if [ -n "$layers" ]; then
  feat_dirs=$(for l in $layers; do echo "$dump/${feature}_l$l"; done); dump_out=$dump/${feature}_l{layer}
fi
join_commas() { local IFS=,; echo "$*"; }
# shellcheck disable=SC2046,SC2086
scps() { join_commas $(for d in $feat_dirs; do echo "$d/$1/feats.scp"; done); }   # scps SET: its feats.scp (comma list)
# codebook K [LAYER]: the codebook of size K (of LAYER; default one per layer of $layers, a comma list)
codebook() {
  # shellcheck disable=SC2086
  $softtok recipe codebook --dir "$exp_dir/kmeans" --feature "$feature" --k "$1" --tokenizer "$tokenizer" \
    --layers ${2:-$layers}
}
# rankme_layers SET [OPTS]: RankMe of every $feature encoder layer on data/SET (softtok analyze rankme OPTS) ->
# $results_dir/RANKME.md, rankme.json, rankme.png, listing the command log (the recipes' RankMe stage)
rankme_layers() {
  local set=$1; shift
  log $softtok analyze rankme --data-dir "$data/$set" --feature "$feature" "$@" --commands "$cmds" \
    --out-dir "$results_dir"
}
discrete_models=$(for k in $ks; do echo asr_hard_k$k; [ -z "$soft_train_factor" ] || echo asr_soft_k$k; done)

if run_stage 3 "dump $feature features"; then
  for set in $train_set $dev_set $test_sets; do
    # shellcheck disable=SC2086
    run_sharded dump_${feature}_$set $softtok dump-features --data-dir $data/$set --feature $feature $feature_opts \
      --out-dir $dump_out/$set
  done
  mark_done 3
fi

if run_stage 4 "learn $tokenizer codebooks (K = $ks)"; then
  for k in $ks; do
    if [ "$tokenizer" = dmel ]; then
      log $softtok learn-dmel --feats $feats/$train_set/feats.scp --n-bins $k --portion $km_portion --out "$(codebook $k)"
    elif [ -n "$layers" ]; then
      for l in $layers; do
        log $softtok learn-kmeans --feats $dump/${feature}_l$l/$train_set/feats.scp --n-clusters $k --backend faiss \
          --portion $km_portion --out "$(codebook $k $l)"
      done
    else
      log $softtok learn-kmeans --feats $feats/$train_set/feats.scp --n-clusters $k --backend faiss \
        --portion $km_portion --out "$(codebook $k)"
    fi
  done
  mark_done 4
fi

threads=$(( $(nproc) / train_nj > 0 ? $(nproc) / train_nj : 1 ))
asr_train() {  # asr_train EXP HEAD [--kmeans KM]: in the background, train_nj at once (wait_bg waits)
  local name=$1 head=$2; shift 2
  log_bg $softtok asr train --config $train_conf --head $head "$@" --num-threads $threads \
    --train-feats "$(scps $train_set)" --train-text $data/$train_set/text \
    --valid-feats "$(scps $dev_set)" --valid-text $data/$dev_set/text --exp-dir $exp_dir/$name
}
if run_stage 5 "train ASR on hard tokens, continuous features (and soft/soft if soft_train_factor is set)"; then
  for k in $ks; do
    asr_train asr_hard_k$k hard --kmeans "$(codebook $k)"
    [ -z "$soft_train_factor" ] || asr_train asr_soft_k$k soft --kmeans "$(codebook $k)" \
      --tau-factor "$soft_train_factor"
  done
  asr_train asr_continuous continuous
  wait_bg
  mark_done 5
fi

if run_stage 6 "choose τ on $dev_set (sweep)"; then
  for model in $discrete_models; do
    # shellcheck disable=SC2086
    log $softtok asr sweep-tau --exp-dir $exp_dir/$model --feats "$(scps $dev_set)" \
      --text $data/$dev_set/text --factors $tau_factors
  done
  mark_done 6
fi

if run_stage 7 "decode every set: hard, soft(τ*), soft(auto τ: set, utterance), continuous"; then
  for model in $discrete_models asr_continuous; do
    # shellcheck disable=SC2086
    log $softtok asr decode-sets --exp-dir $exp_dir/$model --dump "$(join_commas $feat_dirs)" --data $data \
      --sets $dev_set $test_sets --search $search
  done
  mark_done 7
fi

if run_stage 8 "results.json, RESULTS.md, plots"; then
  # shellcheck disable=SC2086
  $softtok asr results --exp $exp_dir --data $data --ks $ks --sets $dev_set $test_sets --search $search \
    --subsets $subsets --commands $cmds --out-dir $results_dir
  mark_done 8
fi
