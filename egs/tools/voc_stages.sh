# Stages 2-9 of the unit-vocoder recipes (egs/*/voc/run.sh), shared: features -> k-means on the target speaker's
# train -> vocoders on hard tokens and on continuous features -> speaker embedding -> τ sweep on dev -> synthesis and
# evaluation of the ID (resynthesis) and OOD (conversion) sets -> results.json / RESULTS.md / spectrograms -> bundles.
# Source it from run.sh after stage.sh and the corpus's own data stage 1 (data/{train,dev,test_id,test_ood}), with:
#   feature feature_opts   featurizer name and extra dump-features options (e.g. "--checkpoint C --layer 6")
#   k                      the k-means codebook size, or several ("128 1024"): one codebook and one hard model each
#   vocoder train_conf tau_factors criterion nj train_nj oracles
#   speaker                target speaker's name (its embedding: exp_dir/speaker_ref/<speaker>.npy)
#   py data dump exp_dir results_dir (and $cmds from commands_log)

softtok="$py -m softtok.cli"
voc="$softtok voc"
feats=$dump/$feature
codebook() { $softtok recipe codebook --dir "$exp_dir/kmeans" --feature "$feature" --k "$1"; }
hard_models=(); for kk in $k; do hard_models+=("voc_${vocoder}_hard_k$kk"); done
cont_model=voc_${vocoder}_continuous
speaker_ref=$exp_dir/speaker_ref/$speaker.npy
sets="--id-sets test_id --ood-sets test_ood"

if run_stage 2 "dump $feature features"; then
  for set in train dev test_id test_ood; do
    # shellcheck disable=SC2086
    run_sharded dump_${feature}_$set $softtok dump-features --data-dir $data/$set --feature $feature $feature_opts \
      --out-dir $feats/$set
  done
  mark_done 2
fi

if run_stage 3 "learn k-means (K = $k) on $speaker train"; then
  for kk in $k; do
    log $softtok learn-kmeans --feats $feats/train/feats.scp --n-clusters $kk --backend faiss --out "$(codebook $kk)"
  done
  mark_done 3
fi

threads=$(( $(nproc) / train_nj > 0 ? $(nproc) / train_nj : 1 ))
train() {  # train EXP HEAD [--kmeans KM]: in the background, train_nj at once (wait_bg waits)
  local name=$1 head=$2; shift 2
  log_bg $voc train --vocoder "$vocoder" --config $train_conf --head $head "$@" --num-threads $threads \
    --feats $feats/train/feats.scp --data-dir $data/train --valid-feats $feats/dev/feats.scp \
    --valid-data $data/dev --exp-dir $exp_dir/$name
}
if run_stage 4 "train the $vocoder vocoders: on hard tokens (K = $k) and on continuous features"; then
  for kk in $k; do train voc_${vocoder}_hard_k$kk hard --kmeans "$(codebook $kk)"; done
  train $cont_model continuous
  wait_bg
  mark_done 4
fi

if run_stage 5 "$speaker's speaker embedding (speaker similarity reference)"; then
  log $voc speaker-ref --data $data/train --out $speaker_ref
  mark_done 5
fi

if run_stage 6 "choose τ on $speaker dev (sweep, $criterion), per K"; then
  for model in "${hard_models[@]}"; do
    # shellcheck disable=SC2086
    log $voc sweep-tau --exp-dir $exp_dir/$model --feats $feats/dev/feats.scp --data $data/dev \
      --factors $tau_factors --criterion $criterion
  done
  mark_done 6
fi

if run_stage 7 "synthesise and evaluate test_id (resynthesis) and test_ood (conversion); score the references"; then
  for model in "${hard_models[@]}" $cont_model; do   # train_nj at once: each hard model (2 sets x 2 heads),
    # shellcheck disable=SC2086
    log_bg $voc synth-eval --num-threads $threads --exp-dir $exp_dir/$model --dump $feats --data $data $sets \
      --speaker-ref $speaker_ref
  done
  # shellcheck disable=SC2086
  log_bg $voc reference --num-threads $threads --data $data $sets --speaker-ref $speaker_ref \
    --oracles $oracles --out-dir $exp_dir/reference   # continuous (2 sets), references (natural, oracles)
  wait_bg
  mark_done 7
fi

if run_stage 8 "results.json, RESULTS.md, spectrograms"; then
  # shellcheck disable=SC2086
  log $voc results --exp $exp_dir --data $data --vocoders $vocoder --k $k $sets --commands $cmds --out-dir $results_dir
  mark_done 8
fi
export_bundles 9 "${hard_models[@]}" $cont_model
echo "== done"
