#!/usr/bin/env bash
# speechocean762 token ASR: train on hard k-means tokens, decode hard / soft(τ from dev) / continuous,
# in domain (test, adults/children) and out of domain (babble noise at 10/0 dB, accented FSDD digits).
# Every stage is one Python call per set; finished stages are skipped (exp_dir/.done/stageN).
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=11
data_root=../../../../shared/data      # holds speechocean762/ and fsdd/ (download: softtok prepare --help)
feature=whisper                        # or mfcc (or hubert/wavlm/wav2vec2 with --checkpoint/--layer)
ks="128 1024"                          # k-means codebook sizes
km_portion=0.34                        # k-means on a third of train_sp (~ the size of unperturbed train)
train_conf=conf/train_cpu.yaml
tau_factors="0.005 0.01 0.02 0.03 0.05 0.1 0.25 1"
search=greedy                          # greedy | beam (joint CTC/attention, slow on CPU)
soft_train_factor=                     # e.g. 0.02: also train soft/soft models (τ = factor × median d²); empty: off
nj=2
train_nj=3                             # ASR trainings at once, each with nproc/train_nj torch threads (at least 1)
phone_conf=conf/phone_ctc_cpu.yaml     # stages 9-11: phone CTC model for frame phone labels (forced alignment)
align_sets=test                        # sets aligned in stage 10 (e.g. "train_sp dev test")
analysis_set=test                      # the set ANALYSIS.md measures (must be in align_sets)
analysis_max_utts=                     # an evenly spaced subset of it (empty: all)
smoke=false                            # tiny subsets and model: every stage in about two minutes
data=data
dump=dump
exp_dir=exp
results_dir=.
. ../../tools/stage.sh "$@"

if [ "$smoke" = true ]; then
  ks="16 32"; train_conf=conf/train_smoke.yaml; tau_factors="0.01 0.05"; phone_conf=conf/phone_ctc_smoke.yaml
fi
discrete_models=$(for k in $ks; do echo asr_hard_k$k; [ -z "$soft_train_factor" ] || echo asr_soft_k$k; done)
py=${PYTHON:-python}
softtok="$py -m softtok.cli"
test_sets="test test_noisy_10db test_noisy_0db fsdd"
feat_sets="train_sp dev $test_sets"
feats=$dump/$feature
commands_log "$exp_dir/commands.txt" "egs/speechocean762/asr/run.sh $*"   # log CMD: run it and append it there

if run_stage 1 "prepare speechocean762 and FSDD"; then
  log $softtok prepare --corpus speechocean762 --corpus-dir "$data_root/speechocean762" --out-dir "$data/orig"
  log $softtok prepare --corpus fsdd --corpus-dir "$data_root/fsdd" --out-dir "$data/orig"
  for set in train test fsdd; do
    if [ "$smoke" = true ]; then n=$([ $set = train ] && echo 120 || echo 24)
      log $softtok subset-data --src "$data/orig/$set" --out "$data/$set" --n $n
    else rm -rf "${data:?}/$set"; cp -r "$data/orig/$set" "$data/$set"; fi
  done
  mark_done 1
fi

if run_stage 2 "dev split, speed perturbation, noisy and subset sets"; then
  sets="$py -m softtok.recipes.sets"
  log $sets split-speakers --src $data/train --out-a $data/train_nodev --out-b $data/dev --fraction 0.1 --seed 0
  log $sets speed-perturb --src $data/train_nodev --out $data/train_sp --factors 0.9 1.0 1.1
  for snr in 10 0; do
    log $sets add-noise --src $data/test --out $data/test_noisy_${snr}db --snr $snr --noise babble \
      --noise-source $data/train_nodev --seed 0
  done
  log $sets split-age --src $data/test --out-adults $data/test_adults --out-children $data/test_children
  log $sets split-accent --src $data/fsdd --out-us $data/fsdd_us --out-nonus $data/fsdd_nonus
  mark_done 2
fi

if run_stage 3 "dump $feature features"; then
  for set in $feat_sets; do
    log $softtok dump-features --data-dir $data/$set --feature $feature --nj $nj --out-dir $feats/$set
  done
  mark_done 3
fi

if run_stage 4 "learn k-means (K = $ks)"; then
  for k in $ks; do
    log $softtok learn-kmeans --feats $feats/train_sp/feats.scp --n-clusters $k --backend faiss --portion $km_portion \
      --out $exp_dir/kmeans/${feature}_k$k.npy
  done
  mark_done 4
fi

threads=$(( $(nproc) / train_nj > 0 ? $(nproc) / train_nj : 1 ))
train() {  # train EXP HEAD [--kmeans KM]: in the background, train_nj at once (wait_bg waits)
  local name=$1 head=$2; shift 2
  log_bg $py -m softtok.downstream.asr.train --config $train_conf --head $head "$@" --num-threads $threads \
    --train-feats $feats/train_sp/feats.scp --train-text $data/train_sp/text \
    --valid-feats $feats/dev/feats.scp --valid-text $data/dev/text --exp-dir $exp_dir/$name
}
if run_stage 5 "train ASR on hard tokens, continuous features (and soft/soft if soft_train_factor is set)"; then
  for k in $ks; do
    train asr_hard_k$k hard --kmeans $exp_dir/kmeans/${feature}_k$k.npy
    [ -z "$soft_train_factor" ] || train asr_soft_k$k soft --kmeans $exp_dir/kmeans/${feature}_k$k.npy \
      --tau-factor "$soft_train_factor"
  done
  train asr_continuous continuous
  wait_bg
  mark_done 5
fi

if run_stage 6 "choose τ on dev (sweep)"; then
  for model in $discrete_models; do
    # shellcheck disable=SC2086
    log $py -m softtok.recipes.asr sweep-tau --exp-dir $exp_dir/$model --feats $feats/dev/feats.scp \
      --text $data/dev/text --factors $tau_factors
  done
  mark_done 6
fi

if run_stage 7 "decode every set: hard, soft(τ*), continuous"; then
  for model in $discrete_models asr_continuous; do
    # shellcheck disable=SC2086
    log $py -m softtok.recipes.asr decode-sets --exp-dir $exp_dir/$model --dump $feats --data $data \
      --sets dev $test_sets --search $search
  done
  mark_done 7
fi

if run_stage 8 "results.json, RESULTS.md, plots"; then
  # shellcheck disable=SC2086
  $py -m softtok.recipes.asr results --exp $exp_dir --data $data --ks $ks --sets dev $test_sets --search $search \
    --subsets test:adults=test_adults test:children=test_children fsdd:us=fsdd_us fsdd:nonus=fsdd_nonus \
    --commands $cmds --out-dir $results_dir
  mark_done 8
fi
resource=$data_root/speechocean762/resource
if run_stage 9 "phone transcripts; phone CTC model on continuous features"; then
  for set in train_sp dev $align_sets; do
    log $softtok phone-text --text $data/$set/text --text-phone $resource/text-phone --lexicon $resource/lexicon.txt \
      --out $data/$set/text_phone
  done
  log $py -m softtok.downstream.asr.train --config $phone_conf --head continuous --num-threads "$(nproc)" \
    --train-feats $feats/train_sp/feats.scp --train-text $data/train_sp/text_phone \
    --valid-feats $feats/dev/feats.scp --valid-text $data/dev/text_phone --exp-dir $exp_dir/phone_ctc
  mark_done 9
fi

if run_stage 10 "frame phone labels by CTC forced alignment ($align_sets); phone error rate"; then
  for set in $align_sets; do
    log $softtok align --exp-dir $exp_dir/phone_ctc --feats $feats/$set/feats.scp --phone-text $data/$set/text_phone \
      --out-dir $exp_dir/align/$set
    log $py -m softtok.downstream.asr.decode --exp-dir $exp_dir/phone_ctc --feats $feats/$set/feats.scp \
      --text $data/$set/text_phone --head continuous --out-dir $exp_dir/phone_ctc/decode_continuous_greedy/$set
  done
  mark_done 10
fi

if run_stage 11 "analysis: phone separability, RankMe, purity/PNMI (ANALYSIS.md)"; then
  # shellcheck disable=SC2086
  log $softtok analyze tokens --feats $feats/$analysis_set/feats.scp --labels $exp_dir/align/$analysis_set/phones.txt \
    --models $(for k in $ks; do echo $exp_dir/asr_hard_k$k; done) --continuous-model $exp_dir/asr_continuous \
    ${analysis_max_utts:+--max-utts $analysis_max_utts} --commands $cmds --out-dir $results_dir
  mark_done 11
fi
echo "== done"
