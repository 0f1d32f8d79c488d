"""The independent judges (PocketSphinx ASR, DNSMOS) on real speech from ../shared/data, and in the Evaluator."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from conftest import SPEECHOCEAN, make_speechocean_subset, needs_shared, needs_whisper
from softtok.downstream.scoring import load_per_utt, score
from softtok.tokenizers.audio import read_audio
from softtok.tokenizers.datadir import load_data_dir

pytestmark = [needs_shared,
              pytest.mark.skipif(importlib.util.find_spec("pocketsphinx") is None
                                 or importlib.util.find_spec("speechmos") is None,
                                 reason="extra [vocoder] not installed (pocketsphinx, speechmos)")]

# Four adult read utterances (speaker 0036, speechocean762 train). Chosen as ones PocketSphinx's general en-US model
# mostly gets right: on the first 12 adult train utterances (non-native, Mandarin L1) its WER is 71 %.
UTTS = ("000360036", "000360132", "000360210", "000360241")
SO_TRAIN = SPEECHOCEAN / "train"
DNSMOS_SAMPLES = int(2.3 * 16000)  # DNSMOS repeats it to 9.2 s: one 9.01 s window (a 3 s utterance takes five)


@pytest.fixture(scope="module")
def speech() -> Dict[str, np.ndarray]:
    data = load_data_dir(SO_TRAIN)
    return {u: read_audio(str(SPEECHOCEAN / data.wav_scp[u]), u).numpy() for u in UTTS}


@pytest.fixture(scope="module")
def refs() -> Dict[str, str]:
    text = load_data_dir(SO_TRAIN).text
    return {u: text[u] for u in UTTS}


@pytest.fixture(scope="module")
def noise(speech) -> List[np.ndarray]:
    """White noise at the RMS level of the first two utterances (2.3 s each)."""
    rng = np.random.default_rng(0)
    return [np.sqrt(np.mean(w ** 2)) * rng.standard_normal(DNSMOS_SAMPLES) for w in list(speech.values())[:2]]


@pytest.fixture(scope="module")
def asr():
    from softtok.downstream.vocoder.judges import PocketsphinxJudge

    return PocketsphinxJudge()


@pytest.fixture(scope="module")
def dnsmos():
    from softtok.downstream.vocoder.judges import DNSMOS

    return DNSMOS(num_threads=2)


@pytest.fixture(scope="module")
def hyps(asr, speech) -> List[str]:
    return asr.transcribe(list(speech.values()))


@pytest.fixture(scope="module")
def scores(dnsmos, speech) -> List[Dict[str, float]]:
    return [dnsmos.score(w[:DNSMOS_SAMPLES]) for w in speech.values()]


def _wer(refs: Dict[str, str], hyps: List[str]) -> float:
    return score(dict(list(refs.items())[:len(hyps)]), dict(zip(refs, hyps)))["wer"]


def test_pocketsphinx_understands_real_speech_not_noise(asr, speech, refs, hyps, noise):
    assert all(h == h.lower() for h in hyps)
    assert _wer(refs, hyps) <= 35.0, hyps
    rotated = dict(zip(refs, list(refs.values())[1:] + list(refs.values())[:1]))  # each hyp against another text
    assert _wer(rotated, hyps) >= 80.0
    assert _wer(refs, asr.transcribe([w[::-1].copy() for w in speech.values()])) >= 80.0  # reversed speech
    assert _wer(refs, asr.transcribe(noise)) >= 90.0


def test_pocketsphinx_is_deterministic_and_order_free(asr, speech, hyps):
    assert asr.transcribe(list(speech.values())[2::-1]) == hyps[2::-1]


def test_dnsmos_rates_speech_above_noise(dnsmos, scores, noise):
    rows, noisy = scores, [dnsmos.score(n) for n in noise]
    for row in rows + noisy:
        assert set(row) == {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"}
        assert all(1.0 <= row[k] <= 5.0 for k in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")), row
        assert math.isfinite(row["dnsmos_p808"])
    speech_ovrl = np.mean([r["dnsmos_ovrl"] for r in rows])
    noise_ovrl = np.mean([r["dnsmos_ovrl"] for r in noisy])
    assert speech_ovrl >= 2.5 and noise_ovrl <= 1.8 and speech_ovrl - noise_ovrl >= 1.0, (speech_ovrl, noise_ovrl)
    assert np.mean([r["dnsmos_p808"] for r in rows]) > np.mean([r["dnsmos_p808"] for r in noisy]) + 0.5


def test_dnsmos_clips_loud_input_and_uses_the_thread_count(dnsmos, speech):
    wave = next(iter(speech.values()))[:DNSMOS_SAMPLES]
    loud = 8.0 * wave / np.abs(wave).max()  # speechmos itself refuses samples outside [-1, 1]
    assert dnsmos.score(loud) == dnsmos.score(np.clip(loud, -1, 1))  # also: the same input, the same scores
    assert dnsmos.model.onnx_sess.get_session_options().intra_op_num_threads == 2


@pytest.mark.parametrize("wave, sr, message", [
    (np.zeros(0), 16000, "empty waveform"),
    (np.full(1600, np.nan), 16000, "NaN"),
    (np.zeros((2, 1600)), 16000, "mono 1-D"),
    (np.zeros(1600), 8000, "sample rate must be 16000"),
])
def test_bad_input_is_one_line(asr, dnsmos, wave, sr, message):
    for call in (lambda: asr.transcribe([np.zeros(1600), wave], sr), lambda: dnsmos.score(wave, sr)):
        with pytest.raises(ValueError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


@needs_whisper
@pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None, reason="resemblyzer not installed")
def test_evaluator_writes_both_judges_and_dnsmos(tmp_path, asr, dnsmos):
    from softtok.recipes.voc.evaluate import Evaluator

    data = make_speechocean_subset(tmp_path / "data", 3)
    np.save(tmp_path / "spk.npy", np.ones(256, dtype=np.float32) / 16.0)
    evaluator = Evaluator(str(tmp_path / "spk.npy"))
    evaluator._pocketsphinx, evaluator._dnsmos = asr, dnsmos  # loaded once for the module
    summary = evaluator.evaluate(data, tmp_path / "natural", "natural")
    saved = json.loads((tmp_path / "natural" / "metrics.json").read_text())
    assert saved["summary"] == summary and summary["n_utts"] == 3
    for folder, suffix in (("judge", ""), ("judge_pocketsphinx", "_ps")):
        assert set(load_per_utt(tmp_path / "natural" / folder)) == set(saved["per_utt"])
        counts = (tmp_path / "natural" / folder / "wer.txt").read_text()
        assert f"{summary['wer' + suffix]:.2f}" in counts and 0 <= summary["cer" + suffix]
    keys = {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"}
    assert all(keys <= set(row) for row in saved["per_utt"].values()) and keys <= set(summary)
    assert 2.0 <= summary["dnsmos_ovrl"] <= 5.0
