"""Vocoder metrics: MCD core and DTW on hand-checked numbers, WORLD F0 on synthetic tones, Whisper judge."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from conftest import SPEECHOCEAN, needs_shared, needs_whisper
from softtok.downstream.vocoder.metrics import (SpeakerSimilarity, VocabularyDecoder, cepstral_distortion,
                                                check_wave, compare_f0, cosine_similarity, dtw, envelope_to_mcep,
                                                extract_f0, f0_metrics, log_mel_distance, mcd_of_features,
                                                mel_cepstral_distortion, paired_mean_difference, whisper_features,
                                                world_features)

SR = 16000
JUDGE_UTT = "010300003"  # speechocean762 test, speaker 1030 (adult, 27): "THE RESULT WAS AN UPSET"


def harmonic(f0_hz: np.ndarray, amp: float = 0.1) -> np.ndarray:
    """A full-band harmonic signal (1/sqrt(k) tilt) following a per-sample F0 track."""
    phase = 2 * np.pi * np.cumsum(f0_hz) / SR
    return amp * sum(np.sin(k * phase) / np.sqrt(k) for k in range(1, int(SR / 2 / f0_hz.max())))


def glide(lo: float = 110.0, hi: float = 160.0, seconds: float = 1.0) -> np.ndarray:
    """Per-sample F0 track rising linearly from ``lo`` to ``hi`` Hz."""
    return np.linspace(lo, hi, int(seconds * SR))


# --------------------------------------------------------------------------------------- DTW and MCD core

def test_dtw_hand_checked_matrix():
    # Best route 0 -> 0 -> 1 -> 0 = 1; e.g. the diagonal-ish (0,0)(1,1)(2,2)(2,3) costs 4.
    cost = np.array([[0, 2, 5, 9], [3, 0, 1, 7], [8, 6, 4, 0]], dtype=float)
    total, path = dtw(cost)
    assert total == 1.0
    assert path.tolist() == [[0, 0], [1, 1], [1, 2], [2, 3]]
    assert dtw(np.array([[1.0, 2.0, 3.0]]))[0] == 6.0  # a single row must walk right
    assert dtw(np.array([[1.0], [2.0], [3.0]]))[1].tolist() == [[0, 0], [1, 0], [2, 0]]


def test_dtw_matches_brute_force_on_small_matrices():
    def brute(c, i=0, j=0):
        if (i, j) == (c.shape[0] - 1, c.shape[1] - 1):
            return c[i, j]
        nxt = [(i + di, j + dj) for di, dj in ((1, 1), (1, 0), (0, 1)) if i + di < c.shape[0] and j + dj < c.shape[1]]
        return c[i, j] + min(brute(c, a, b) for a, b in nxt)

    rng = np.random.default_rng(0)
    for _ in range(50):
        c = rng.random(tuple(rng.integers(1, 5, size=2)))
        total, path = dtw(c)
        assert total == pytest.approx(brute(c), abs=1e-12)
        assert c[path[:, 0], path[:, 1]].sum() == pytest.approx(total, abs=1e-12)


def test_mcd_constant_offset_is_exact_and_c0_excluded():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(40, 25))  # frames far apart (~7 units) relative to delta: DTW keeps the diagonal
    delta = 0.3
    syn = ref.copy()
    syn[:, 5] += delta
    res = cepstral_distortion(ref, syn)
    expected = 10 / math.log(10) * math.sqrt(2) * delta
    print(f"offset {delta}: MCD {res.mcd_db:.12f} dB, expected {expected:.12f}, path {res.path_length}")
    assert res.mcd_db == pytest.approx(expected, abs=1e-12)
    assert res.path_length == 40
    syn0 = ref.copy()
    syn0[:, 0] += 5.0  # energy only
    assert cepstral_distortion(ref, syn0).mcd_db == 0.0


def test_mcd_core_is_zero_for_time_stretched_copy():
    ref = np.random.default_rng(2).normal(size=(30, 25))
    stretched = np.repeat(ref, 2, axis=0)
    res = cepstral_distortion(ref, stretched)
    assert res.mcd_db == 0.0 and res.path_length == 60
    assert cepstral_distortion(ref, ref, align=False).mcd_db == 0.0
    with pytest.raises(ValueError, match="align=False needs equal frame counts, got 30 and 60"):
        cepstral_distortion(ref, stretched, align=False)


def test_freqt_recovers_known_mel_cepstrum():
    # log|H(w)| = sum_m mc_m cos(m * beta(w)), beta the all-pass (alpha = 0.42) phase: sp2mc must return mc.
    rng = np.random.default_rng(3)
    mc = rng.normal(size=25) * np.exp(-0.2 * np.arange(25))
    w = np.linspace(0, np.pi, 513)
    beta = w + 2 * np.arctan(0.42 * np.sin(w) / (1 - 0.42 * np.cos(w)))
    log_h = np.cos(np.outer(beta, np.arange(25))) @ mc
    est = envelope_to_mcep(np.exp(2 * log_h)[None], order=24, alpha=0.42)[0]
    assert np.abs(est - mc).max() < 1e-9
    assert np.abs(envelope_to_mcep(np.exp(2 * log_h)[None], order=24, alpha=0.0)[0] - mc).max() > 0.1


# ------------------------------------------------------------------------------------ waveform front-end

def test_mcd_waveform_self_is_zero_and_grows_with_noise():
    ref = harmonic(glide())
    assert mel_cepstral_distortion(ref, torch.from_numpy(ref)).mcd_db == pytest.approx(0, abs=1e-6)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=len(ref)) * np.sqrt(np.mean(ref ** 2))
    mcds = [mel_cepstral_distortion(ref, ref + noise * 10 ** (-snr / 20)).mcd_db for snr in (30, 20, 10)]
    print("MCD at SNR 30/20/10 dB:", [round(m, 2) for m in mcds])
    assert 0 < mcds[0] < mcds[1] < mcds[2]


def test_world_features_give_the_same_mcd_and_f0_from_one_analysis():
    ref, syn = harmonic(glide()), harmonic(glide() + 12.0)
    a, b = world_features(ref), world_features(syn)
    assert mcd_of_features(a, b) == mel_cepstral_distortion(ref, syn)
    assert compare_f0(a.f0, b.f0) == f0_metrics(ref, syn)
    assert len(a.f0) == len(a.mcep) == len(a.energy_db) == 101 and a.mcep.shape[1] == 25


def test_log_mel_distance_zero_grows_and_checks_length():
    ref = harmonic(glide())
    assert log_mel_distance(ref, ref) == 0.0
    # a gain shifts the log-mel by log 2, except in the few bins that sit at the 1e-5 floor
    assert log_mel_distance(ref, 0.5 * ref) == pytest.approx(math.log(2), abs=0.05)
    assert 0 < log_mel_distance(ref, ref[:-320]) < 0.05  # 2 frames shorter: compared, only the edge differs
    with pytest.raises(ValueError, match="differ by 20 frames"):
        log_mel_distance(ref, ref[:-3200])


def test_paired_mean_difference_hand_case():
    res = paired_mean_difference([1.0, 2.0, 3.0, math.nan], [0.5, 1.5, 2.5, 9.0], n_resamples=200)
    assert res["delta"] == pytest.approx(-0.5) and res["ci_low"] == pytest.approx(-0.5)
    assert res["ci_high"] == pytest.approx(-0.5) and res["p_lower"] == 1.0 and res["n_utts"] == 3  # NaN pair dropped
    noisy = paired_mean_difference(np.arange(50.0), np.arange(50.0) + np.random.default_rng(0).normal(size=50))
    assert noisy["ci_low"] < noisy["delta"] < noisy["ci_high"]
    with pytest.raises(ValueError, match="equal length"):
        paired_mean_difference([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="no utterance has a finite value"):
        paired_mean_difference([math.nan], [1.0])


def test_f0_metrics_constant_offset_and_glide():
    res = f0_metrics(harmonic(np.full(SR, 120.0)), harmonic(np.full(SR, 132.0)))
    print("120 vs 132 Hz:", res)
    assert res["f0_rmse_hz"] == pytest.approx(12.0, abs=0.5)
    assert res["vuv_error"] == 0.0
    res = f0_metrics(harmonic(glide()), harmonic(glide() + 12.0))
    print("glide vs glide + 12 Hz:", res)
    assert res["f0_rmse_hz"] == pytest.approx(12.0, abs=0.5)
    assert res["f0_corr"] > 0.999
    same = f0_metrics(harmonic(glide()), harmonic(glide()))
    assert same["vuv_error"] == 0.0 and same["f0_rmse_hz"] == 0.0 and same["n_voiced_both"] > 90


def test_f0_of_pulse_train():
    pulses = np.zeros(SR)
    pulses[np.round(np.arange(0, SR, SR / 150)).astype(int)] = 1.0
    f0 = extract_f0(pulses)
    print("pulse train 150 Hz: median F0", np.median(f0[f0 > 0]), "voiced", np.mean(f0 > 0))
    assert len(f0) == 101 and np.mean(f0 > 0) > 0.9
    assert abs(np.median(f0[f0 > 0]) - 150.0) < 3.0


def test_compare_f0_hand_case_and_length_check():
    ref = np.array([100.0, 100.0, 0.0, 200.0, 0.0])
    syn = np.array([110.0, 90.0, 150.0, 200.0, 0.0, 0.0])  # one extra trailing frame is cut off
    res = compare_f0(ref, syn)
    assert res["f0_rmse_hz"] == pytest.approx(math.sqrt((100 + 100 + 0) / 3))
    assert res["vuv_error"] == pytest.approx(1 / 5) and res["n_voiced_both"] == 3
    assert math.isnan(compare_f0(ref, np.zeros(5))["f0_rmse_hz"])
    with pytest.raises(ValueError, match="F0 tracks differ by 10 frames"):
        compare_f0(ref, np.zeros(15))


# ----------------------------------------------------------------------------------------------- speaker

@pytest.mark.parametrize("a, b, expected", [
    ([1, 0], [0, 1], 0.0), ([1, 2, 3], [2, 4, 6], 1.0), ([1, 0], [-3, 0], -1.0), ([1, 1], [1, 0], 1 / math.sqrt(2)),
])
def test_cosine_similarity_hand_cases(a, b, expected):
    assert cosine_similarity(np.array(a, float), torch.tensor(b, dtype=torch.float32)) == pytest.approx(expected)


@pytest.mark.parametrize("a, b, message", [
    ([0, 0], [1, 0], "undefined for a zero vector"),
    ([1, 0], [1, 0, 0], r"equal size, got shapes \(2,\) and \(3,\)"),
    ([1, float("nan")], [1, 0], "NaN or infinite"),
])
def test_cosine_similarity_bad_input(a, b, message):
    with pytest.raises(ValueError, match=message):
        cosine_similarity(np.array(a, float), np.array(b, float))


def test_speaker_similarity_missing_package_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # makes `import resemblyzer` fail
    with pytest.raises(ImportError, match=r"pip install softtok\[vocoder\]"):
        SpeakerSimilarity().embed(np.ones(SR))


def test_speaker_similarity_with_resemblyzer():
    pytest.importorskip("resemblyzer")
    sim = SpeakerSimilarity(device="cpu")
    a, b = harmonic(glide(seconds=2.0)), harmonic(glide(200, 260, seconds=2.0))
    assert sim(a, a) == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= sim(a, b) <= 1.0


# ------------------------------------------------------------------------------------------- bad input

BAD_WAVES = [
    (np.zeros(0), SR, "ref: empty waveform"),
    (np.zeros((2, SR)), SR, r"ref: expected a mono 1-D waveform, got shape \(2, 16000\)"),
    (np.zeros((SR, 1)), SR, r"got shape \(16000, 1\)"),
    (np.array([0.0, np.nan] * 800), SR, "ref: waveform contains NaN or infinite samples"),
    (np.zeros(SR), 8000, "ref: sample rate must be 16000 Hz, got 8000"),
]


@pytest.mark.parametrize("wave, sr, message", BAD_WAVES)
def test_bad_input_is_one_clear_value_error(wave, sr, message):
    good = harmonic(np.full(SR // 2, 120.0))
    for fn in (mel_cepstral_distortion, f0_metrics):
        with pytest.raises(ValueError, match=message):
            fn(wave, good, sr=sr)
    with pytest.raises(ValueError, match=message.replace("ref:", "wave:")):
        whisper_features(wave, sr)


def test_check_wave_accepts_torch_and_rejects_long_judge_input():
    assert check_wave(torch.ones(5)).dtype == np.float64
    with pytest.raises(ValueError, match="longer than Whisper's 30 s window"):
        whisper_features(np.zeros(31 * SR))
    assert whisper_features(np.zeros(SR)).shape == (80, 3000)


# ------------------------------------------------------------------------------------------------ judge

@needs_whisper
def test_vocabulary_decoder_matches_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    from softtok.tokenizers.features.whisper import default_whisper_model

    model_dir = default_whisper_model()
    tok = tokenizers.Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    text = " The result wasn't an upset, café!"
    ids = [tok.token_to_id("<|startoftranscript|>")] + tok.encode(text).ids
    assert VocabularyDecoder(f"{model_dir}/vocabulary.txt").decode(ids) == tok.decode(ids) == text


@needs_shared
@needs_whisper
def test_judge_asr_on_real_utterance():
    from softtok.downstream.vocoder.metrics import JudgeASR
    from softtok.tokenizers.audio import read_audio
    from softtok.tokenizers.datadir import read_kaldi_map

    ref = read_kaldi_map(SPEECHOCEAN / "test" / "text", require_sorted=False)[JUDGE_UTT]
    wave = read_audio(str(SPEECHOCEAN / "WAVE" / "SPEAKER1030" / f"{JUDGE_UTT}.ogg"), JUDGE_UTT)
    judge = JudgeASR(num_threads=2, beam_size=1)
    result = judge.wer([wave], [ref])
    print(f"ref: {ref!r} hyp: {result['hyps'][0]!r} WER {result['wer']}% CER {result['cer']}%")
    assert isinstance(result["hyps"][0], str) and result["hyps"][0].strip()
    assert result["wer"] < 100.0
    with pytest.raises(ValueError, match="got 1 waveforms but 2 reference texts"):
        judge.wer([wave], [ref, ref])
