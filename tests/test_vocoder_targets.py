"""Lazy vocoder targets: lengths from audio headers, batches equal to the eager (in-RAM) targets, no arrays held."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from conftest import write_wave
from softtok.downstream.vocoder.hifigan import HOP, WaveVocoderData
from softtok.downstream.vocoder.mel import MelVocoderData, log_mel
from softtok.tokenizers.audio import AudioError, read_utterance, resampled_length
from softtok.tokenizers.datadir import load_data_dir, write_data_dir
from softtok.tokenizers.fileio import ArkScpWriter
from softtok.tokenizers.heads import build_head

DIM = 4


def _write_feats(path: Path, frames: Dict[str, int], seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    with ArkScpWriter(path / "feats.ark", path / "feats.scp") as writer:
        for utt, n in frames.items():
            writer.write(utt, rng.standard_normal((n, DIM)).astype(np.float32))
    return str(path / "feats.scp")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Dict[str, str]:
    """LJSpeech-like 22.05 kHz files, 16 kHz files and two segments of one 24 kHz recording; 50 token frames/s."""
    root = tmp_path_factory.mktemp("lazy_targets")
    rng = np.random.default_rng(0)
    wav, seconds, segments = {}, {}, {}
    for i, sr in enumerate([22050, 22050, 16000, 22050, 16000]):
        utt, dur = f"a{i}", 0.61 + 0.17 * i
        write_wave(root / f"{utt}.wav", 0.1 * rng.standard_normal(int((dur + 0.02) * sr)), sr)
        wav[utt], seconds[utt] = str(root / f"{utt}.wav"), dur
    write_wave(root / "rec.wav", 0.1 * rng.standard_normal(48000), 24000)
    wav["rec"] = str(root / "rec.wav")
    for utt in wav:
        if utt != "rec":
            segments[utt] = f"{utt} 0 {seconds[utt]}"
    segments.update({"s0": "rec 0.1 0.93", "s1": "rec 1.05 1.9"})
    seconds.update({"s0": 0.83, "s1": 0.85})
    data = write_data_dir(root / "data", wav, segments=segments)
    frames = {u: int(50 * s) for u, s in sorted(seconds.items())}
    return {"feats": _write_feats(root, frames), "data": str(data)}


@pytest.mark.parametrize("orig", [22050, 24000, 44100, 48000, 8000])
def test_resampled_length_is_torchaudios(orig):
    lengths = [1, 2, 441, 12345, 99_991] + list(np.random.default_rng(orig).integers(1000, 250_000, 12))
    for n in lengths:
        assert resampled_length(int(n), orig, 16000) == len(AF.resample(torch.zeros(int(n)), orig, 16000)), n


def test_lazy_mel_batches_equal_eager_targets(mixed):
    lazy = MelVocoderData(mixed["feats"], mixed["data"])
    held = MelVocoderData(mixed["feats"], mixed["data"], preload_targets=True)
    data = load_data_dir(mixed["data"])
    eager = {u: log_mel(read_utterance(data, u)) for u in lazy.utts}  # what the data held before it was lazy
    assert lazy.targets.lengths == {u: len(m) for u, m in eager.items()}
    head = build_head("continuous")
    groups = lazy.batches(200, shuffle=True, seed=1)
    assert len(groups) > 1 and groups == held.batches(200, shuffle=True, seed=1)
    for group in groups:
        a, b = lazy.collate(group, head), held.collate(group, head)
        expected = torch.nn.utils.rnn.pad_sequence([eager[u] for u in group], batch_first=True)
        assert torch.equal(a[3], expected) and torch.equal(b[3], expected)
        assert a[4].tolist() == b[4].tolist() == [len(eager[u]) for u in group]


def test_lazy_wave_crops_equal_eager_crops(mixed):
    """The crops of an epoch equal those the in-RAM data made (same rng draws, same samples)."""
    lazy = WaveVocoderData(mixed["feats"], mixed["data"])
    data = load_data_dir(mixed["data"])
    eager = {u: read_utterance(data, u) for u in lazy.utts}
    assert lazy.targets.num_samples == {u: len(w) for u, w in eager.items()}
    frames = {u: min(lazy.num_frames[u], len(w) // HOP) for u, w in eager.items()}
    assert {u: lazy.frames(u) for u in lazy.utts} == frames
    head, seg = build_head("continuous"), 20
    groups = lazy.segment_batches(3, seg, 2, np.random.default_rng(7))
    rng = np.random.default_rng(7)  # the old draws: the shuffle, then one start per crop as batches were made
    usable = [u for u in lazy.utts if frames[u] >= seg]
    order = [usable[i] for i in rng.permutation(len(usable) * 2) % len(usable)]
    for i, group in enumerate(groups):
        utts = order[3 * i:3 * i + 3]
        starts = [int(rng.integers(0, frames[u] - seg + 1)) for u in utts]
        assert group == list(zip(utts, starts))
        tokens, waves = lazy.crop(group, head, seg)
        expected = torch.stack([eager[u][s * HOP:(s + seg) * HOP] for u, s in group]).unsqueeze(1)
        assert torch.equal(waves, expected)
        assert torch.equal(tokens.feats, torch.stack([torch.from_numpy(lazy.feats[u][s:s + seg]) for u, s in group]))
    assert sum(len(g) for g in groups) == 2 * len(usable)


def _array_bytes(obj, seen=None) -> int:
    """Bytes of numpy arrays and tensors reachable from ``obj`` through softtok objects, dicts, lists and tuples."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_array_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_array_bytes(v, seen) for v in obj)
    if type(obj).__module__.startswith("softtok") and hasattr(obj, "__dict__"):
        return _array_bytes(vars(obj), seen)
    return 0


def test_lazy_targets_hold_no_audio(tmp_path):
    """About 13 MB of 16 kHz audio: lazily, no array is held and construction allocates well under 1 % of it."""
    rng = np.random.default_rng(0)
    wav = {}
    for i in range(40):
        wav[f"u{i:02d}"] = str(write_wave(tmp_path / "audio" / f"u{i:02d}.wav", 0.1 * rng.standard_normal(80_000)))
    data = write_data_dir(tmp_path / "data", wav)
    feats = _write_feats(tmp_path, {u: 250 for u in wav})
    size = 40 * 80_000 * 4
    tracemalloc.start()
    try:
        lazy = WaveVocoderData(feats, str(data))
        _, lazy_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        held = WaveVocoderData(feats, str(data), preload_targets=True)
        _, held_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _array_bytes(lazy) < 1000, _array_bytes(lazy)  # the first feature matrix's dims, nothing per utterance
    assert _array_bytes(held) >= size
    assert lazy_peak < 0.01 * size, f"lazy construction peaked at {lazy_peak / 1e6:.2f} MB for {size / 1e6:.0f} MB"
    assert held_peak > size
    assert _array_bytes(MelVocoderData(feats, str(data))) < 1000


def test_bad_audio_is_one_line_naming_utterance_and_file(mixed, tmp_path):
    wav = {"u0": str(write_wave(tmp_path / "u0.wav", np.zeros(16000))), "u1": str(tmp_path / "missing.wav")}
    data = write_data_dir(tmp_path / "data", wav)
    feats = _write_feats(tmp_path, {"u0": 50, "u1": 50})
    with pytest.raises(AudioError, match=r"^utterance 'u1': cannot read audio .*missing.wav: [^\n]*$"):
        MelVocoderData(feats, str(data))  # at construction, not at the first batch
    sf.write(str(tmp_path / "missing.wav"), np.zeros((16000, 2)), 16000)
    with pytest.raises(AudioError, match=r"^utterance 'u1': .*missing.wav has 2 channels, expected mono$"):
        MelVocoderData(feats, str(data))
    sf.write(str(tmp_path / "missing.wav"), np.zeros(16000), 16000)
    lazy = WaveVocoderData(feats, str(data))
    sf.write(str(tmp_path / "missing.wav"), np.zeros(15000), 16000)  # changed after indexing
    with pytest.raises(AudioError, match=r"^utterance 'u1': .*missing.wav gave 15000 samples, its header promised "
                                         r"16000 \(file changed since the data was indexed\?\)$"):
        lazy.targets["u1"]
