#!/usr/bin/env bash
# speechocean762 tokenizer recipe: data -> whisper features -> k-means -> hard and soft tokens.
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=4
data_root=../../../../shared/data       # where speechocean762/ lies (download: softtok prepare --help)
feature=whisper                         # or mfcc, fbank, hubert/wavlm/wav2vec2 (+ --checkpoint)
checkpoint=
layer=
n_clusters=128
backend=faiss
portion=1.0
soft_tau=5                              # soft top-k tokens written for the test set
top_k=8
nj=2                                    # shards: local processes, or Slurm array tasks with --cmd slurm
data=data                               # data dirs are written here
dump=dump                               # features are written here
exp_dir=exp
. ../../tools/stage.sh "$@"

softtok=${SOFTTOK:-softtok}
feat_opts=(--feature "$feature")
[ -n "$checkpoint" ] && feat_opts+=(--checkpoint "$checkpoint")
[ -n "$layer" ] && feat_opts+=(--layer "$layer")
feats=$dump/$feature${layer:+_l$layer}
km=$exp_dir/kmeans_$($softtok recipe codebook --feature "$feature" --k "$n_clusters" ${layer:+--layers "$layer"})

if run_stage 1 "prepare data dirs"; then
  $softtok prepare --corpus speechocean762 --corpus-dir "$data_root/speechocean762" --out-dir "$data"
  mark_done 1
fi
if run_stage 2 "dump $feature features"; then
  for set in train test; do
    run_sharded dump_${feature}_$set $softtok dump-features --data-dir "$data/$set" "${feat_opts[@]}" --out-dir $feats/$set
  done
  mark_done 2
fi
if run_stage 3 "learn k-means K=$n_clusters"; then
  $softtok learn-kmeans --feats $feats/train/feats.scp --n-clusters "$n_clusters" --backend "$backend" \
    --portion "$portion" --out "$km"
  mark_done 3
fi
if run_stage 4 "dump hard and soft tokens"; then
  for set in train test; do
    run_sharded tokens_hard_$set $softtok dump-tokens --feats $feats/$set/feats.scp --kmeans "$km" --head hard \
      --out-dir $exp_dir/tokens_k${n_clusters}/hard/$set
  done
  run_sharded tokens_soft_test $softtok dump-tokens --feats $feats/test/feats.scp --kmeans "$km" --head soft --tau "$soft_tau" \
    --top-k "$top_k" --out-dir $exp_dir/tokens_k${n_clusters}/soft_tau${soft_tau}_topk${top_k}/test
  mark_done 4
fi
echo "== done: tokens under $exp_dir/tokens_k${n_clusters}"
