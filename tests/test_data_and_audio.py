"""Data dir validation (Kaldi rules) and audio reading: good input works, bad input is one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FSDD, SPEECHOCEAN, needs_shared, write_wave
from softtok.tokenizers.audio import AudioError, read_audio, read_utterance
from softtok.tokenizers.datadir import DataError, load_data_dir, write_data_dir


def test_valid_dir_reads_relative_and_absolute_paths(tone_dir):
    data = load_data_dir(tone_dir)
    assert data.utt_ids == ["utt_a", "utt_b", "utt_c"]
    assert data.text["utt_b"] == "HELLO"
    c = read_utterance(data, "utt_c")
    assert c.dtype == torch.float32 and c.shape == (12000,)


def test_resample_8k_to_16k(tone_dir):
    wave = read_utterance(load_data_dir(tone_dir), "utt_b")
    assert wave.shape == (16000,)
    spectrum = torch.fft.rfft(wave).abs()
    assert abs(int(spectrum.argmax()) - 330) <= 1  # 1 Hz bins over a 1 s signal: the tone survives


@needs_shared
def test_real_corpora_load():
    so = load_data_dir(SPEECHOCEAN / "test", require_text=True)
    assert len(so) == 2500 and so.text[so.utt_ids[0]].isupper()
    wave = read_audio(str(SPEECHOCEAN / so.wav_scp[so.utt_ids[0]]), so.utt_ids[0])
    assert wave.abs().max() > 0.01 and wave.abs().max() <= 1.0
    digit = read_audio(str(FSDD / "recordings" / "0_george_0.flac"), "0_george_0")
    assert digit.numel() > 4000  # resampled from 8 kHz


def test_segments(tmp_path, tone_dir):
    (tone_dir / "segments").write_text("seg1 utt_a 0.0 0.5\nseg2 utt_a 0.5 1.0\n")
    (tone_dir / "text").write_text("seg1 A\nseg2 B\n")
    (tone_dir / "utt2spk").write_text("seg1 s\nseg2 s\n")
    data = load_data_dir(tone_dir)
    assert data.utt_ids == ["seg1", "seg2"]
    assert read_utterance(data, "seg2").shape == (8000,)


# ---- bad inputs: each must fail with one line naming the file and the key ----

def _write(d: Path, name: str, text: str) -> None:
    (d / name).write_text(text)


BAD_DIRS = {
    "unsorted wav.scp": ("wav.scp", "utt_b b.flac\nutt_a a.wav\n", "not sorted"),
    "duplicate key": ("wav.scp", "utt_a a.wav\nutt_a b.wav\n", "duplicate key 'utt_a'"),
    "empty wav.scp": ("wav.scp", "", "file is empty"),
    "empty line": ("wav.scp", "utt_a a.wav\n\nutt_b b.wav\n", "empty line"),
    "wav.scp entry without path": ("wav.scp", "utt_a\n", "has no audio path"),
    "text missing an utterance": ("text", "utt_a HELLO\nutt_b HELLO\n", "no entry for utterance 'utt_c'"),
    "text with extra utterance": ("text", "utt_a A\nutt_b B\nutt_c C\nutt_d D\n", "'utt_d' is not in wav.scp"),
    "utt2spk with 3 fields": ("utt2spk", "utt_a s x\nutt_b s\nutt_c s\n", "expected 2 fields"),
    "segment with negative span": ("segments", "s1 utt_a 0.8 0.2\n", "is not positive"),
    "segment of unknown recording": ("segments", "s1 nope 0.0 0.2\n", "recording 'nope' not in wav.scp"),
    "segment with bad number": ("segments", "s1 utt_a zero 0.2\n", "not numbers"),
}


@pytest.mark.parametrize("case", sorted(BAD_DIRS))
def test_bad_data_dir(tone_dir, case):
    name, content, message = BAD_DIRS[case]
    _write(tone_dir, name, content)
    if name == "segments":  # text/utt2spk must then name segment ids; drop them for this check
        (tone_dir / "text").unlink()
        (tone_dir / "utt2spk").unlink()
    with pytest.raises(DataError) as err:
        load_data_dir(tone_dir)
    text = str(err.value)
    assert message in text and name in text and "\n" not in text


def test_missing_dir_and_missing_wav_scp(tmp_path):
    with pytest.raises(DataError, match="data directory not found"):
        load_data_dir(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match=r"wav\.scp: file not found"):
        load_data_dir(tmp_path / "d")


def test_piped_wav_scp_is_refused(tone_dir):
    _write(tone_dir, "wav.scp", "utt_a sox a.wav -t wav - |\n")
    (tone_dir / "text").unlink()
    (tone_dir / "utt2spk").unlink()
    with pytest.raises(DataError, match="piped commands"):
        read_utterance(load_data_dir(tone_dir), "utt_a")


def _single_utt_dir(tmp_path: Path, audio: Path) -> Path:
    return write_data_dir(tmp_path / "bad", {"u1": str(audio)})


@pytest.mark.parametrize("case", ["stereo", "empty", "corrupt", "nan", "missing", "segment past end"])
def test_bad_audio(tmp_path, case):
    path = tmp_path / "x.wav"
    if case == "stereo":
        write_wave(path, np.zeros((1600, 2)))
    elif case == "empty":
        write_wave(path, np.zeros(0))
    elif case == "corrupt":
        path.write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    elif case == "nan":
        wave = np.zeros(1600)
        wave[100] = np.nan
        write_wave(path, wave)
    elif case == "segment past end":
        write_wave(path, np.zeros(1600))
    data_dir = _single_utt_dir(tmp_path, path)
    if case == "segment past end":
        (data_dir / "segments").write_text("s1 u1 0.0 5.0\n")
        (data_dir / "utt2spk").unlink()
        (data_dir / "spk2utt").unlink()
    data = load_data_dir(data_dir)
    utt = data.utt_ids[0]
    expected = {"stereo": "2 channels", "empty": "is empty", "corrupt": "cannot read audio",
                "nan": "NaN", "missing": "cannot read audio", "segment past end": "past the end"}[case]
    with pytest.raises(AudioError) as err:
        read_utterance(data, utt)
    assert expected in str(err.value) and repr(utt) in str(err.value) and "\n" not in str(err.value)
