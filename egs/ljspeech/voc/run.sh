#!/usr/bin/env bash
# LJSpeech unit HiFi-GAN: one target speaker (LJ, LJSpeech-1.1), k-means tokens -> HiFi-GAN (or mel) vocoder trained
# on hard tokens and a continuous-feature vocoder; synthesis with hard / soft(τ from LJ dev) / continuous inputs:
# resynthesis of held-out LJ (test_id) and any-to-one conversion of TIMIT TEST speech into LJ's voice (test_ood).
# Stage 1 here; stages 2-9 are egs/tools/voc_stages.sh (shared with egs/piper_joe/voc). Finished stages are skipped.
# conf/ is egs/piper_joe/voc/conf (the same vocoder configs).
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=9
ljspeech=/path/to/LJSpeech-1.1        # metadata.csv + wavs/
timit=/path/to/TIMIT                  # TEST/DR1..DR8/<SPK>/<UTT>.WAV + .TXT
feature=whisper                       # or hubert / wavlm with --checkpoint and --layer
checkpoint=
layer=
k=128                                 # k-means codebook size
n_dev=100                             # LJ dev utterances (τ sweep, validation loss)
n_test=100                            # LJ test_id utterances (resynthesis)
n_ood=200                             # TIMIT TEST utterances (conversion source), evenly spaced; 0: all 1,344
vocoder=hifigan                       # hifigan (GPU) or mel (CPU: conf/mel_cpu.yaml)
train_conf=conf/hifigan_gpu.yaml
tau_factors="0.01 0.03 0.1 0.3 1"     # τ = factor × median squared distance of dev frames to their centroid
criterion=mcd                         # τ* minimises mean dev MCD (mcd) or log-mel distance (mel)
oracles=griffin_lim                   # ceiling row: natural 16 kHz mels through Griffin-Lim
nj=1                                  # feature extraction jobs
train_nj=2                            # trainings (and evaluations) at once, each with nproc/train_nj threads
smoke=false                           # tiny subsets and model: every stage on fixture trees in CI
data=data
dump=dump
exp_dir=exp
results_dir=.
. ../../tools/stage.sh "$@"

if [ "$smoke" = true ]; then
  n_dev=3; n_test=3; n_ood=3; k=16; train_conf=conf/${vocoder}_smoke.yaml; tau_factors="0.1 1"; train_nj=1
fi
py=${PYTHON:-python}
softtok="$py -m softtok.cli"
speaker=LJ
feature_opts="${checkpoint:+--checkpoint $checkpoint} ${layer:+--layer $layer}"
commands_log "$exp_dir/commands.txt" "egs/ljspeech/voc/run.sh" "$@"   # log CMD: run it and append it there

if run_stage 1 "data: LJSpeech train/dev/test_id, TIMIT TEST test_ood"; then
  log $softtok voc-data ljspeech --corpus "$ljspeech" --out $data --n-test $n_test --n-dev $n_dev
  log $softtok voc-data timit --corpus "$timit" --out $data/timit
  log $softtok subset-data --src $data/timit/test_ood --out $data/test_ood --n $n_ood
  mark_done 1
fi

. ../../tools/voc_stages.sh   # stages 2-9: features, k-means, vocoders, τ sweep, synthesis + evaluation, results, bundles
