#!/usr/bin/env bash
# speechocean762 token ASR: train on hard k-means tokens, decode hard / soft(τ from dev) / continuous,
# in domain (test, adults/children) and out of domain (noise at 10/0 dB, accented FSDD digits). Noise on test:
# test_noisy_* babble of training speakers (train_nodev), test_babblefsdd_* babble of FSDD's six speakers (voices
# no model trains on and none evaluated in these sets, the speechocean762 test speakers; FSDD is a test set of its
# own, clean, never mixed), test_pink_* stationary pink (1/f) noise.
# Every stage is one Python call per set; finished stages are skipped (exp_dir/.done/stageN). Stages 3-8 are
# egs/tools/asr_stages.sh, shared with egs/librispeech_100/asr; 9-11: phone analysis (ANALYSIS.md); 12: RankMe of
# every encoder layer on dev (RANKME.md; an unsupervised layer probe, as librispeech_100's stage 9); 13: one bundle
# per model in exp/bundles/ (softtok transcribe / softtok.load).
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=13
data_root=../../../../shared/data      # holds speechocean762/ and fsdd/ (download: softtok prepare --help)
feature=whisper                        # or mfcc (or hubert/wavlm/wav2vec2 with --checkpoint/--layer)
tokenizer=kmeans                       # kmeans | dmel (each fbank log-mel channel binned: ks = bins per channel)
ks=                                    # codebook sizes; default "128 1024" (dmel: bins per channel, default 16 = 4 bits)
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
rankme_utts=0                          # stage 12: RankMe on this many evenly spaced dev utterances (0: all)
smoke=false                            # tiny subsets and model: every stage in about two minutes
data=data
dump=dump
exp_dir=                               # default: exp (exp_dmel with --tokenizer dmel)
results_dir=                           # default: . (results_dmel with --tokenizer dmel)
. ../../tools/stage.sh "$@"

subset_train=0; subset_test=0           # utterances of train and of test/fsdd (0: all)
if [ "$smoke" = true ]; then
  ks="16 32"; train_conf=conf/train_smoke.yaml; tau_factors="0.01 0.05"; phone_conf=conf/phone_ctc_smoke.yaml
  subset_train=120; subset_test=24
fi
py=${PYTHON:-python}
softtok="$py -m softtok.cli"
# the tokenizer's feature, ks and folders (dmel: the 80 fbank log-mel channels, 16 bins, exp_dmel, results_dmel)
settings=$($softtok recipe tokenizer-settings --tokenizer "$tokenizer" --smoke "$smoke" --feature "$feature" \
  --ks "$ks" --exp-dir "$exp_dir" --results-dir "$results_dir")
eval "$settings"
ks=${ks:-128 1024}
noisy_sets="test_noisy_10db test_noisy_0db test_babblefsdd_10db test_babblefsdd_0db test_pink_10db test_pink_0db"
test_sets="test $noisy_sets fsdd"
commands_log "$exp_dir/commands.txt" "egs/speechocean762/asr/run.sh" "$@"   # log CMD: run it and append it there

if run_stage 1 "prepare speechocean762 and FSDD"; then
  log $softtok prepare --corpus speechocean762 --corpus-dir "$data_root/speechocean762" --out-dir "$data/orig"
  log $softtok prepare --corpus fsdd --corpus-dir "$data_root/fsdd" --out-dir "$data/orig"
  for set in train test fsdd; do
    n=$subset_test; [ $set != train ] || n=$subset_train
    log $softtok subset-data --src "$data/orig/$set" --out "$data/$set" --n $n
  done
  mark_done 1
fi

if run_stage 2 "dev split, speed perturbation, noisy (babble of train / FSDD speakers, pink) and subset sets"; then
  sets="$softtok sets"
  log $sets split-speakers --src $data/train --out-a $data/train_nodev --out-b $data/dev --fraction 0.1 --seed 0
  log $sets speed-perturb --src $data/train_nodev --out $data/train_sp --factors 0.9 1.0 1.1
  for snr in 10 0; do
    log $sets add-noise --src $data/test --out $data/test_noisy_${snr}db --snr $snr --noise babble \
      --noise-source $data/train_nodev --seed 0
    log $sets add-noise --src $data/test --out $data/test_babblefsdd_${snr}db --snr $snr --noise babble \
      --noise-source $data/fsdd --seed 0
    log $sets add-noise --src $data/test --out $data/test_pink_${snr}db --snr $snr --noise pink --seed 0
  done
  log $sets split-age --src $data/test --out-adults $data/test_adults --out-children $data/test_children
  log $sets split-accent --src $data/fsdd --out-us $data/fsdd_us --out-nonus $data/fsdd_nonus
  mark_done 2
fi

train_set=train_sp; dev_set=dev; feature_opts=
subsets="test:adults=test_adults test:children=test_children fsdd:us=fsdd_us fsdd:nonus=fsdd_nonus"
. ../../tools/asr_stages.sh   # stages 3-8: features, k-means, training, τ sweep, decoding, results

resource=$data_root/speechocean762/resource
analysis=true   # stages 9-12 measure k-means tokens: not for dMel
if [ "$tokenizer" = dmel ] && [ "$stop_stage" -ge 9 ]; then echo "== stages 9-12: skipped with --tokenizer dmel"; analysis=false; fi
if $analysis && run_stage 9 "phone transcripts; phone CTC model on continuous features"; then
  for set in train_sp dev $align_sets; do
    log $softtok phone-text --text $data/$set/text --text-phone $resource/text-phone --lexicon $resource/lexicon.txt \
      --out $data/$set/text_phone
  done
  log $softtok asr train --config $phone_conf --head continuous --num-threads "$(nproc)" \
    --train-feats $feats/train_sp/feats.scp --train-text $data/train_sp/text_phone \
    --valid-feats $feats/dev/feats.scp --valid-text $data/dev/text_phone --exp-dir $exp_dir/phone_ctc
  mark_done 9
fi

if $analysis && run_stage 10 "frame phone labels by CTC forced alignment ($align_sets); phone error rate"; then
  for set in $align_sets; do
    log $softtok align --exp-dir $exp_dir/phone_ctc --feats $feats/$set/feats.scp --phone-text $data/$set/text_phone \
      --out-dir $exp_dir/align/$set
    log $softtok asr decode --exp-dir $exp_dir/phone_ctc --feats $feats/$set/feats.scp \
      --text $data/$set/text_phone --head continuous --out-dir $exp_dir/phone_ctc/decode_continuous_greedy/$set
  done
  mark_done 10
fi

if $analysis && run_stage 11 "analysis: phone separability, RankMe, purity/PNMI (ANALYSIS.md)"; then
  # shellcheck disable=SC2086
  log $softtok analyze tokens --feats $feats/$analysis_set/feats.scp --labels $exp_dir/align/$analysis_set/phones.txt \
    --models $(for k in $ks; do echo $exp_dir/asr_hard_k$k; done) --continuous-model $exp_dir/asr_continuous \
    ${analysis_max_utts:+--max-utts $analysis_max_utts} --commands $cmds --out-dir $results_dir
  mark_done 11
fi

if $analysis && run_stage 12 "RankMe of every $feature encoder layer on $dev_set (RANKME.md)"; then
  rankme_layers $dev_set --max-utts $rankme_utts
  mark_done 12
fi
# shellcheck disable=SC2086
export_bundles 13 $discrete_models asr_continuous
echo "== done"
