#!/usr/bin/env bash
# piper joe unit vocoder: one target speaker ("joe", synthesised by piper-tts reading speechocean762 sentences),
# whisper k-means tokens -> mel vocoder (+ Griffin-Lim) trained on hard tokens, and a continuous-feature vocoder;
# synthesis with hard / soft(τ from joe dev) / continuous inputs: resynthesis of held-out joe (test_id) and
# any-to-one conversion of real speechocean762 test speech into joe's voice (test_ood).
# Every stage is one Python call per set or model; finished stages are skipped (exp_dir/.done/stageN).
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=8
data_root=../../../../shared/data      # holds speechocean762/ (sentences for piper, conversion source)
feature=whisper
k=128                                  # k-means codebook size
hours=1.5                              # joe training audio
n_dev=50                               # joe dev utterances (τ sweep, validation loss)
n_test=100                             # joe test_id utterances (resynthesis)
n_ood=100                              # speechocean762 test utterances (conversion source)
vocoder=mel                            # mel (tokens -> log-mel + Griffin-Lim) or hifigan (with a hifigan_* conf)
train_conf=conf/mel_cpu.yaml
tau_factors="0.01 0.03 0.1 0.3 1"      # τ = factor × median squared distance of dev frames to their centroid
criterion=mcd                          # τ* minimises mean dev MCD (mcd) or log-mel distance (mel)
nj=2                                   # feature extraction jobs
train_nj=2                             # trainings (and evaluations) at once, each with nproc/train_nj threads
smoke=false                            # tiny subsets and model: every stage in a few minutes
data=data
dump=dump
exp_dir=exp
results_dir=.
. ../../tools/stage.sh "$@"

if [ "$smoke" = true ]; then
  hours=0.01; n_dev=3; n_test=3; n_ood=3; k=16; train_conf=conf/${vocoder}_smoke.yaml; tau_factors="0.1 1"
fi
py=${PYTHON:-python}
if [ "$vocoder" = mel ]; then train_py="$py -m softtok.downstream.vocoder.train"
else train_py="$py -m softtok.downstream.vocoder.$vocoder train"; fi
softtok="$py -m softtok.cli"
voc="$py -m softtok.recipes.voc"
feats=$dump/$feature
hard_model=voc_${vocoder}_hard_k$k
cont_model=voc_${vocoder}_continuous
speaker_ref=$exp_dir/speaker_ref/joe.npy
sets="--id-sets test_id --ood-sets test_ood"
commands_log "$exp_dir/commands.txt" "egs/piper_joe/voc/run.sh $*"   # log CMD: run it and append it there

if run_stage 1 "data: piper joe train/dev/test_id, speechocean762 test_ood"; then
  log $py -m softtok.recipes.voc_data conversion-source --speechocean "$data_root/speechocean762" --out $data \
    --n $n_ood
  # joe never reads a conversion-source sentence: the OOD judge-WER references stay unseen
  log $py -m softtok.recipes.voc_data piper-joe --sentences "$data_root/speechocean762" --out $data \
    --hours $hours --n-dev $n_dev --n-heldout $n_test --exclude-text $data/test_ood/text
  mark_done 1
fi

if run_stage 2 "dump $feature features"; then
  for set in train dev test_id test_ood; do
    run_sharded dump_${feature}_$set $softtok dump-features --data-dir $data/$set --feature $feature --out-dir $feats/$set
  done
  mark_done 2
fi

if run_stage 3 "learn k-means (K = $k) on joe train"; then
  log $softtok learn-kmeans --feats $feats/train/feats.scp --n-clusters $k --backend faiss \
    --out $exp_dir/kmeans/${feature}_k$k.npy
  mark_done 3
fi

threads=$(( $(nproc) / train_nj > 0 ? $(nproc) / train_nj : 1 ))
train() {  # train EXP HEAD [--kmeans KM]: in the background, train_nj at once (wait_bg waits)
  local name=$1 head=$2; shift 2
  log_bg $train_py --config $train_conf --head $head "$@" --num-threads $threads \
    --feats $feats/train/feats.scp --data-dir $data/train --valid-feats $feats/dev/feats.scp \
    --valid-data $data/dev --exp-dir $exp_dir/$name
}
if run_stage 4 "train the $vocoder vocoders: on hard tokens and on continuous features"; then
  train $hard_model hard --kmeans $exp_dir/kmeans/${feature}_k$k.npy
  train $cont_model continuous
  wait_bg
  mark_done 4
fi

if run_stage 5 "joe's speaker embedding (speaker similarity reference)"; then
  log $voc speaker-ref --data $data/train --out $speaker_ref
  mark_done 5
fi

if run_stage 6 "choose τ on joe dev (sweep, $criterion)"; then
  # shellcheck disable=SC2086
  log $voc sweep-tau --exp-dir $exp_dir/$hard_model --feats $feats/dev/feats.scp --data $data/dev \
    --factors $tau_factors --criterion $criterion
  mark_done 6
fi

if run_stage 7 "synthesise and evaluate test_id (resynthesis) and test_ood (conversion); score the references"; then
  for model in $hard_model $cont_model; do   # train_nj at once: hard (4 set x head) | continuous (2) + reference (3)
    # shellcheck disable=SC2086
    log_bg $voc synth-eval --num-threads $threads --exp-dir $exp_dir/$model --dump $feats --data $data $sets \
      --speaker-ref $speaker_ref
  done
  # shellcheck disable=SC2086
  log_bg $voc reference --num-threads $threads --data $data $sets --speaker-ref $speaker_ref \
    --out-dir $exp_dir/reference
  wait_bg
  mark_done 7
fi

if run_stage 8 "results.json, RESULTS.md, spectrograms"; then
  # shellcheck disable=SC2086
  log $voc results --exp $exp_dir --data $data --vocoders $vocoder --k $k $sets --commands $cmds --out-dir $results_dir
  mark_done 8
fi
echo "== done"
