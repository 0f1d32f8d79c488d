"""Python stages of the unit-vocoder recipes: τ sweep on dev, synthesis + evaluation of every set, results.

    softtok voc speaker-ref --data data/train --out exp/speaker_ref.npy
    softtok voc sweep-tau --exp-dir exp/voc_mel_hard_k128 --feats dump/whisper/dev/feats.scp \\
        --data data/dev
    softtok voc reference --data data --id-sets test_id --ood-sets test_ood \\
        --speaker-ref exp/speaker_ref.npy --out-dir exp/reference [--oracles hifigan griffin_lim]
    softtok voc synth-eval --exp-dir exp/voc_mel_hard_k128 --dump dump/whisper --data data \\
        --id-sets test_id --ood-sets test_ood --speaker-ref exp/speaker_ref.npy
    softtok voc results --exp exp --vocoders conformer_mel --k 128 1024 --id-sets test_id --ood-sets test_ood \\
        --out-dir .

τ is chosen on dev only: dev is synthesised with the hard head and with soft heads over a grid of τ (multiples
of the median squared distance of dev frames to their nearest centroid); τ* has the lowest mean dev MCD (or
log-mel distance, ``--criterion mel``) and is then applied unchanged to every test set.

Sets are of two kinds. *ID* (resynthesis): the target speaker's held-out speech, the reference being the same
utterance: MCD (WORLD mel-cepstra, DTW), log-mel distance, F0 RMSE / log-F0 correlation / V/UV error, judge
WER/CER (Whisper tiny.en), speaker similarity to the target (Resemblyzer cosine to the mean embedding of
target training utterances). *OOD* (any-to-one conversion): other speakers' speech through the target's
vocoder: judge WER/CER against the reference text, speaker similarity to the target, F0 correlation and V/UV
error against the source. Synthesis goes to ``<exp>/synth_<head>[_tau<τ>]/<set>/`` (wav/, wav.scp,
synth.yaml), its scores to ``metrics.json`` and ``judge/`` (hyp, per_utt.txt, wer.txt) beside them; finished
parts are skipped on a re-run.

The results stage makes one table per set whose cells and soft − hard intervals are all over the same utterances
(hard and soft(τ*) for each K, continuous, natural audio and the oracles), and writes listening samples (Opus).

Modules: :mod:`.evaluate` (kinds of set, metrics, speaker embedding, reference rows), :mod:`.oracles` (natural
mels through a mel → wave stage), :mod:`.synthesis` (synthesis folders, the τ sweep, test-set synthesis),
:mod:`.results` (results.json), :mod:`.report` (RESULTS.md; :mod:`.markdown` its shared pieces, :mod:`.legacy`
the older results.json), :mod:`.figures` (PNGs), :mod:`.samples` (listening samples), :mod:`.cli` (the stages'
command line).
"""
