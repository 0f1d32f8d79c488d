#!/usr/bin/env bash
# LibriSpeech-100 token ASR at full scale (GPU): HuBERT-large or WavLM-large layer-21 k-means tokens of
# train-clean-100 (k-means on ~30 h of it), an ESPnet-sized E-Branchformer CTC/attention model trained on hard tokens
# (and on continuous features), decoded hard / soft(τ from dev) / continuous on test-clean/-other and out of domain:
# TED-LIUM 2 test, CHiME-4 et05 real+simu (1 channel), L2-ARCTIC (per L1), speechocean762 test (+ ERJ if given).
# Stages 1-2 here; 3-8 are egs/tools/asr_stages.sh (shared with egs/speechocean762/asr); 9: RankMe of every SSL layer
# on dev (an unsupervised layer probe). Finished stages are skipped.
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=10
corpus_root=/path/to/corpora            # default parent of the corpus folders below
librispeech=                            # LibriSpeech/ (default $corpus_root/LibriSpeech)
tedlium=                                # TEDLIUM_release2/
chime4=                                 # CHiME4/ (holding data/)
l2arctic=                               # L2-ARCTIC v5.0 (<SPK>/wav, <SPK>/transcript)
speechocean=                            # speechocean762/
erj=                                    # ERJ folder with softtok_erj.tsv; empty: no ERJ set
feature=hubert                          # hubert | wavlm
checkpoint=                             # HuBERT-large / WavLM-large checkpoint (fairseq .pt or HF dir); required
layer=21
layers=                                 # e.g. "9 15 21 22": one token stream per layer (k-means each), summed embeddings
ks="128 1024 4096"
km_portion=0.3                          # k-means on ~30 h of train-clean-100's 100.6 h
train_conf=conf/train_gpu.yaml
tau_factors="0.005 0.01 0.02 0.03 0.05 0.1 0.25 1"
search=greedy                           # greedy | beam
soft_train_factor=                      # e.g. 0.02: also train soft/soft models; empty: off
nj=1                                    # feature extraction jobs (one GPU: 1)
train_nj=1                              # trainings at once (one GPU: 1)
rankme_utts=200                         # stage 9: RankMe on this many evenly spaced dev utterances
smoke=false                             # tiny subsets and model: every stage on fixture trees in CI
data=data
dump=dump
exp_dir=exp
results_dir=.
. ../../tools/stage.sh "$@"

for name in librispeech:LibriSpeech tedlium:TEDLIUM_release2 chime4:CHiME4 l2arctic:l2arctic speechocean:speechocean762; do
  var=${name%%:*}; [ -n "${!var}" ] || printf -v "$var" '%s' "$corpus_root/${name#*:}"
done
subset_n=0                              # utterances per set (0: all)
if [ "$smoke" = true ]; then
  ks="8 16"; train_conf=conf/train_smoke.yaml; tau_factors="0.05 1"; km_portion=1.0; subset_n=12
fi
if [ -z "$checkpoint" ]; then echo "$0: --checkpoint (a $feature large checkpoint) is required" >&2; exit 1; fi
py=${PYTHON:-python}
softtok="$py -m softtok.cli"
sets="$softtok sets"
layers=$(echo $layers)                  # "" = the single --layer; else one stream per layer ($dump/${feature}_l<L>)
feature_opts="--checkpoint $checkpoint --layer $(echo ${layers:-$layer} | tr ' ' ,)"
train_set=train_clean_100; dev_set=dev
test_sets="test_clean test_other tedlium2_test chime4_et05_real chime4_et05_simu l2arctic speechocean762_test"
[ -z "$erj" ] || test_sets="$test_sets erj"
commands_log "$exp_dir/commands.txt" "egs/librispeech_100/asr/run.sh" "$@"   # log CMD: run it and append it there

if run_stage 1 "prepare LibriSpeech, TED-LIUM 2, CHiME-4, L2-ARCTIC, speechocean762${erj:+, ERJ}"; then
  orig=$data/orig
  log $softtok prepare --corpus librispeech --corpus-dir "$librispeech" --out-dir $orig
  log $softtok prepare --corpus tedlium2 --corpus-dir "$tedlium" --out-dir $orig
  log $softtok prepare --corpus chime4 --corpus-dir "$chime4" --out-dir $orig
  log $softtok prepare --corpus l2arctic --corpus-dir "$l2arctic" --out-dir $orig
  log $softtok prepare --corpus speechocean762 --corpus-dir "$speechocean" --out-dir $orig/speechocean762
  [ -z "$erj" ] || log $softtok prepare --corpus erj --corpus-dir "$erj" --out-dir $orig
  for set in train_clean_100 dev_clean dev_other $test_sets; do
    src=$orig/$set; [ "$set" != speechocean762_test ] || src=$orig/speechocean762/test
    log $softtok subset-data --src $src --out $data/$set --n $subset_n
  done
  mark_done 1
fi

if run_stage 2 "dev = dev-clean + dev-other; L2-ARCTIC per L1"; then
  log $sets combine --src $data/dev_clean $data/dev_other --out $data/dev
  log $sets split-attribute --src $data/l2arctic --out-prefix $data/l2arctic --file spk2l1
  mark_done 2
fi

subsets=""   # results per L1: l2arctic:arabic=l2arctic_arabic ...
for d in "$data"/l2arctic_*/; do [ -d "$d" ] || continue; n=$(basename "$d"); subsets="$subsets l2arctic:${n#l2arctic_}=$n"; done
. ../../tools/asr_stages.sh   # stages 3-8: features, k-means, training, τ sweep, decoding, results

if run_stage 9 "RankMe of every $feature layer on $dev_set (RANKME.md)"; then
  rankme_layers $dev_set --checkpoint "$checkpoint" --max-utts $rankme_utts
  mark_done 9
fi
# shellcheck disable=SC2086
export_bundles 10 $discrete_models asr_continuous
echo "== done"
