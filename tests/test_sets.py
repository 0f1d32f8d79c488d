"""Data-set builders: speaker splits, attribute subsets, speed perturbation and additive noise."""

from __future__ import annotations

import io
import math
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import FSDD, REPO, SPEECHOCEAN, needs_shared, write_wave
from softtok.recipes import augment
from softtok.recipes.augment import add_noise, mix_at_snr, pink_noise, speed_perturb
from softtok.recipes.sets import main
from softtok.recipes.subsets import (split_adults_children, split_by_speaker, split_fsdd_accents,
                                     subset_by_speaker_attribute)
from softtok.tokenizers.audio import limit_peak, read_utterance
from softtok.tokenizers.datadir import DataError, load_data_dir, read_kaldi_map, write_data_dir, write_kaldi_map
from softtok.tokenizers.fileio import load_yaml

OLD_MTIME = 1_000_000_000  # files are stamped with this before a rerun; a rewrite would change it


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def so_dir(tmp_path_factory) -> Path:
    """Eight real speechocean762 utterances: 2 each of 2 children and 2 adults, spk2age left unsorted."""
    if not SPEECHOCEAN.is_dir():
        pytest.skip(f"{SPEECHOCEAN} not present")
    src = load_data_dir(SPEECHOCEAN / "train")
    ages = read_kaldi_map(SPEECHOCEAN / "train" / "spk2age", require_sorted=False)
    genders = read_kaldi_map(SPEECHOCEAN / "train" / "spk2gender")
    children = sorted(s for s, a in ages.items() if int(a) < 18)[:2]
    adults = sorted(s for s, a in ages.items() if int(a) >= 18)[:2]
    utts = [u for spk in children + adults for u in [u for u in src.utt_ids if src.utt2spk[u] == spk][:2]]
    dest = tmp_path_factory.mktemp("so") / "data"
    wav = {u: str((SPEECHOCEAN / src.wav_scp[u]).resolve()) for u in utts}
    write_data_dir(dest, wav, {u: src.text[u] for u in utts}, {u: src.utt2spk[u] for u in utts})
    speakers = sorted(children + adults, reverse=True)  # deliberately not sorted, like the release's spk2age
    (dest / "spk2age").write_text("".join(f"{s}\t{ages[s]}\n" for s in speakers))
    write_kaldi_map(dest / "spk2gender", {s: genders[s] for s in speakers})
    return dest


@pytest.fixture(scope="module")
def fsdd_dir(tmp_path_factory) -> Path:
    """One real FSDD recording per speaker (8 kHz) with spk2accent from speakers.tsv."""
    if not FSDD.is_dir():
        pytest.skip(f"{FSDD} not present")
    rows = [line.split("\t") for line in (FSDD / "speakers.tsv").read_text().splitlines()[1:] if line]
    wav = {f"{r[0]}_0_00": str(FSDD / "recordings" / f"0_{r[0]}_0.flac") for r in rows}
    dest = write_data_dir(tmp_path_factory.mktemp("fsdd") / "data", wav, {u: "ZERO" for u in wav},
                          {u: u.split("_")[0] for u in wav})
    write_kaldi_map(dest / "spk2accent", {r[0]: r[2] for r in rows})
    return dest


def tone(freq: float, n: int, sr: int = 16000, amp: float = 0.1, seed: int = 0) -> np.ndarray:
    """A tone plus a little seeded white noise."""
    rng = np.random.default_rng(seed)
    return amp * np.sin(2 * np.pi * freq * np.arange(n) / sr) + 0.01 * amp * rng.standard_normal(n)


@pytest.fixture
def synth_dir(tmp_path) -> Path:
    """Five synthetic utterances of three speakers (one recorded at 8 kHz), with spk2accent."""
    specs = {"a_1": ("a", 1000, 16000, 16000), "a_2": ("a", 300, 16000, 12000), "b_1": ("b", 500, 16000, 16000),
             "b_2": ("b", 700, 8000, 8000), "c_1": ("c", 900, 16000, 20000)}
    wav = {}
    for i, (utt, (_, freq, sr, n)) in enumerate(specs.items()):
        wav[utt] = str(write_wave(tmp_path / "wav" / f"{utt}.flac", tone(freq, n, sr, seed=i), sr))
    data = write_data_dir(tmp_path / "data", wav, {u: "HELLO" for u in wav}, {u: s[0] for u, s in specs.items()})
    write_kaldi_map(data / "spk2accent", {"a": "USA/neutral", "b": "DEU/German", "c": "GRC/Greek"})
    return data


def files_of(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def stamp_old(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, (OLD_MTIME, OLD_MTIME))


def rewritten(root: Path) -> list:
    return [str(p) for p in root.rglob("*") if p.is_file() and p.stat().st_mtime != OLD_MTIME]


def fitted_snr(mixture: np.ndarray, signal: np.ndarray, noise: np.ndarray) -> float:
    """SNR of ``mixture ≈ a·signal + b·noise`` (least squares), immune to an overall gain."""
    basis = np.stack([signal, noise], 1).astype(np.float64)
    (a, b), *_ = np.linalg.lstsq(basis, mixture.astype(np.float64), rcond=None)
    return 10 * math.log10(a * a * np.mean(basis[:, 0] ** 2) / (b * b * np.mean(basis[:, 1] ** 2)))


# ----------------------------------------------------------------------------- speaker splits


@needs_shared
def test_split_by_speaker_disjoint_covering_deterministic(so_dir, tmp_path):
    train, dev = split_by_speaker(so_dir, tmp_path / "train", tmp_path / "dev", fraction=0.25, seed=0)
    src, a, b = load_data_dir(so_dir), load_data_dir(train, require_text=True), load_data_dir(dev)
    spk_a, spk_b = set(a.utt2spk.values()), set(b.utt2spk.values())
    assert len(spk_b) == 1 and len(spk_a) == 3 and not spk_a & spk_b
    assert sorted(a.utt_ids + b.utt_ids) == src.utt_ids
    assert all(os.path.isabs(p) for p in a.wav_scp.values())
    assert set(read_kaldi_map(dev / "spk2age")) == spk_b and set(read_kaldi_map(train / "spk2gender")) == spk_a
    assert a.text == {u: src.text[u] for u in a.utt_ids}
    # same seed: same split; some other seed holds out another speaker
    again = split_by_speaker(so_dir, tmp_path / "t2", tmp_path / "d2", fraction=0.25, seed=0)
    assert files_of(again[1]) == files_of(dev) and files_of(again[0]) == files_of(train)
    held = {s for seed in range(10) for s in load_data_dir(split_by_speaker(
        so_dir, tmp_path / "t3", tmp_path / "d3", 0.25, seed)[1]).utt2spk.values()}
    assert len(held) > 1
    # a rerun rewrites nothing
    stamp_old(tmp_path / "train")
    stamp_old(tmp_path / "dev")
    split_by_speaker(so_dir, tmp_path / "train", tmp_path / "dev", fraction=0.25, seed=0)
    assert rewritten(tmp_path / "train") == [] and rewritten(tmp_path / "dev") == []


@needs_shared
def test_split_adults_children(so_dir, tmp_path):
    adults, children = split_adults_children(so_dir, tmp_path / "adults", tmp_path / "children")
    ages = {"adults": read_kaldi_map(adults / "spk2age"), "children": read_kaldi_map(children / "spk2age")}
    assert len(ages["adults"]) == 2 and all(int(a) >= 18 for a in ages["adults"].values())
    assert len(ages["children"]) == 2 and all(int(a) < 18 for a in ages["children"].values())
    assert set(load_data_dir(adults).utt2spk.values()) == set(ages["adults"])
    with pytest.raises(DataError, match="no child speakers"):
        split_adults_children(so_dir, tmp_path / "x", tmp_path / "y", adult_age=0)
    assert not (tmp_path / "x").exists()  # both groups are checked before anything is written


@needs_shared
def test_split_fsdd_accents(fsdd_dir, tmp_path):
    us, nonus = split_fsdd_accents(fsdd_dir, tmp_path / "us", tmp_path / "nonus")
    assert set(load_data_dir(us).utt2spk.values()) == {"jackson", "theo"}
    assert set(load_data_dir(nonus).utt2spk.values()) == {"lucas", "yweweler", "nicolas", "george"}
    assert set(read_kaldi_map(nonus / "spk2accent").values()) == {"DEU/German", "BEL/French", "GRC/Greek"}


def test_subset_by_speaker_attribute(synth_dir, tmp_path):
    out = subset_by_speaker_attribute(synth_dir, tmp_path / "german", "spk2accent", lambda a: "German" in a)
    assert load_data_dir(out).utt_ids == ["b_1", "b_2"] and read_kaldi_map(out / "spk2accent") == {"b": "DEU/German"}
    with pytest.raises(DataError, match="no speaker matches"):
        subset_by_speaker_attribute(synth_dir, tmp_path / "none", "spk2accent", lambda a: False)
    write_kaldi_map(synth_dir / "spk2age", {"a": "30", "b": "ten"})
    with pytest.raises(DataError, match=r"spk2age: speaker 'b': bad value 'ten'"):
        split_adults_children(synth_dir, tmp_path / "ad", tmp_path / "ch")
    write_kaldi_map(synth_dir / "spk2age", {"a": "30", "b": "10"})
    with pytest.raises(DataError, match=r"spk2age: no entry for speaker 'c'"):
        split_adults_children(synth_dir, tmp_path / "ad", tmp_path / "ch")
    assert not (tmp_path / "none").exists() and not (tmp_path / "ad").exists()


# ----------------------------------------------------------------------------- speed perturbation


def peak_frequency(wave: np.ndarray, sr: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.argmax(spectrum) * sr / len(wave))


def test_speed_perturb_ids_durations_pitch(synth_dir, tmp_path):
    out = speed_perturb(synth_dir, tmp_path / "sp")
    data, src = load_data_dir(out, require_text=True), load_data_dir(synth_dir)
    assert len(data) == 3 * len(src)
    assert data.utt_ids == sorted(data.utt_ids, key=str.encode)
    assert data.wav_scp["a_1"] == src.wav_scp["a_1"]  # factor 1: original path, id unchanged
    assert data.utt2spk["sp0.9-a_1"] == "sp0.9-a" and data.text["sp1.1-c_1"] == "HELLO"
    accents = read_kaldi_map(out / "spk2accent")
    assert accents["sp1.1-b"] == "DEU/German" and accents["b"] == "DEU/German" and len(accents) == 9
    for utt in src.utt_ids:
        n = read_utterance(src, utt).numel()
        for f in (0.9, 1.1):
            path = data.wav_scp[f"sp{f}-{utt}"]
            assert path.startswith(str((tmp_path / "sp" / "audio").resolve())) and path.endswith(".flac")
            info = sf.info(path)
            assert info.samplerate == 16000 and abs(info.frames - n / f) <= 2, (utt, f, info.frames, n / f)
    # speed changes pitch too (sox `speed`, not `tempo`): 1000 Hz becomes 1100 Hz at 1.1
    fast, _ = sf.read(data.wav_scp["sp1.1-a_1"])
    slow, _ = sf.read(data.wav_scp["sp0.9-a_1"])
    assert abs(peak_frequency(fast) - 1100) < 3 and abs(peak_frequency(slow) - 900) < 3


def test_speed_perturb_resumes(synth_dir, tmp_path):
    out = speed_perturb(synth_dir, tmp_path / "sp", factors=(0.9, 1.1))
    assert "a_1" not in load_data_dir(out).wav_scp  # no factor 1: every id is prefixed
    before = files_of(out)
    stamp_old(out)
    speed_perturb(synth_dir, tmp_path / "sp", factors=(0.9, 1.1))
    assert rewritten(out) == []
    (out / "audio" / "sp0.9-b_2.flac").unlink()
    speed_perturb(synth_dir, tmp_path / "sp", factors=(0.9, 1.1))
    assert rewritten(out) == [str(out / "audio" / "sp0.9-b_2.flac")]
    assert files_of(out) == before  # the redone file is identical


@needs_shared
def test_speed_perturb_real_speech(so_dir, tmp_path):
    src = load_data_dir(so_dir)
    two = write_data_dir(tmp_path / "two", {u: src.wav_scp[u] for u in src.utt_ids[:2]})
    data = load_data_dir(speed_perturb(two, tmp_path / "sp", factors=(1.1,)))
    for utt in src.utt_ids[:2]:
        ratio = read_utterance(data, f"sp1.1-{utt}").numel() / read_utterance(src, utt).numel()
        assert abs(ratio - 1 / 1.1) < 1e-3


# ----------------------------------------------------------------------------- noise


def test_mix_at_snr_exact():
    gen = torch.Generator().manual_seed(0)
    signal, noise = 0.1 * torch.randn(16000, generator=gen), torch.rand(16000, generator=gen) - 0.3
    for snr in (-5.0, 0.0, 7.5, 20.0):
        mixed = mix_at_snr(signal, noise, snr)
        measured = 10 * math.log10(signal.double().pow(2).mean() / (mixed - signal).double().pow(2).mean())
        assert abs(measured - snr) < 0.01
    with pytest.raises(DataError, match="signal is silent"):
        mix_at_snr(torch.zeros(100), noise[:100], 0.0)


def test_pink_noise_is_seeded_and_pink():
    a, b, c = pink_noise(2 ** 16, 1), pink_noise(2 ** 16, 1), pink_noise(2 ** 16, 2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    psd = np.abs(np.fft.rfft(a.numpy())) ** 2
    freqs = np.fft.rfftfreq(a.numel(), 1 / 16000)
    low = psd[(freqs >= 100) & (freqs < 200)].mean()
    high = psd[(freqs >= 1000) & (freqs < 2000)].mean()
    assert 6 < low / high < 16  # 1/f: a decade up is ~10x less power per Hz (white noise would give 1)


def test_add_noise_pink_snr_and_peak_limit(synth_dir, tmp_path):
    loud = tmp_path / "loud"
    write_wave(loud / "x.wav", 0.98 * np.sign(np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)))
    write_data_dir(loud, {"x": "x.wav"})
    for src, snr in ((synth_dir, 10.0), (loud, 0.0)):
        out = add_noise(src, tmp_path / f"pink_{src.name}", snr, noise="pink", seed=3)
        data, clean = load_data_dir(out), load_data_dir(src)
        plan = read_kaldi_map(out / "utt2noise")
        for utt in clean.utt_ids:
            signal = read_utterance(clean, utt).numpy()
            mixture, sr = sf.read(data.wav_scp[utt], dtype="float32")
            assert sr == 16000 and len(mixture) == len(signal) and np.abs(mixture).max() <= 0.99 + 1e-4
            noise = pink_noise(len(signal), int(plan[utt].split("=")[1])).numpy()
            assert abs(fitted_snr(mixture, signal, noise) - snr) < 0.1, utt
    loud_mix, _ = sf.read(tmp_path / "pink_loud" / "audio" / "x.flac")
    assert abs(np.abs(loud_mix).max() - 0.99) < 1e-3  # scaled down as a whole, not clipped
    settings = load_yaml(tmp_path / "pink_loud" / "noise.yaml")
    assert settings["noise"] == "pink" and settings["snr_db"] == 0.0 and settings["seed"] == 3


@needs_shared
def test_add_noise_babble_real_speech(so_dir, tmp_path):
    out = add_noise(so_dir, tmp_path / "babble", 5.0, noise="babble", seed=0)
    data, clean = load_data_dir(out, require_text=True), load_data_dir(so_dir)
    assert data.utt_ids == clean.utt_ids and data.text == clean.text and data.utt2spk == clean.utt2spk
    assert read_kaldi_map(out / "spk2age", require_sorted=False) == read_kaldi_map(so_dir / "spk2age",
                                                                                    require_sorted=False)
    plan = read_kaldi_map(out / "utt2noise")
    for utt in clean.utt_ids:
        talkers = plan[utt].split(" ")[1].split(",")
        assert utt not in talkers and 3 <= len(talkers) <= 5 and len(set(talkers)) == len(talkers)
        signal = read_utterance(clean, utt).numpy()
        mixture, _ = sf.read(data.wav_scp[utt], dtype="float32")
        noise = augment._noise_for(utt, plan[utt], clean, len(signal), 0).numpy()
        assert abs(fitted_snr(mixture, signal, noise) - 5.0) < 0.1, utt
    meta = load_yaml(out / "noise.yaml")
    assert meta["noise"] == "babble" and meta["noise_source"] == str(so_dir.resolve())
    # resumable: a rerun rewrites nothing; other settings into the same dir are refused
    stamp_old(out)
    add_noise(so_dir, tmp_path / "babble", 5.0, noise="babble", seed=0)
    assert rewritten(out) == []
    with pytest.raises(DataError, match="made with snr_db=5.0, not 10.0"):
        add_noise(so_dir, tmp_path / "babble", 10.0, noise="babble", seed=0)


def test_babble_never_uses_the_utterance_itself(synth_dir, tmp_path):
    """Not by id, and not under another id in a separate noise source holding the same audio."""
    src = load_data_dir(synth_dir)
    twin = load_data_dir(write_data_dir(tmp_path / "twin", {f"z{u}": src.resolve(p) for u, p in src.wav_scp.items()}))
    plans = set()
    for seed in range(40):
        for pool, prefix in ((src, ""), (twin, "z")):
            plan = augment._noise_plan(src, pool, "babble", seed)
            for utt, value in plan.items():
                talkers = value.split(" ")[1].split(",")
                assert prefix + utt not in talkers and 3 <= len(talkers) <= 4  # 4 others available
            plans.add(tuple(plan.values()))
    assert len(plans) > 10  # seeded, yet not the same choice for every seed
    assert augment._noise_plan(src, src, "babble", 7) == augment._noise_plan(src, src, "babble", 7)


def spectral_slope(wave: np.ndarray, sr: int = 16000, low: float = 100.0, high: float = 6000.0) -> float:
    """Slope in dB per decade of the averaged (Hann, 4096-sample) power spectrum, fitted over [low, high] Hz."""
    segments = wave[: len(wave) // 4096 * 4096].reshape(-1, 4096) * np.hanning(4096)
    psd = (np.abs(np.fft.rfft(segments, axis=1)) ** 2).mean(0)
    freqs = np.fft.rfftfreq(4096, 1 / sr)
    band = (freqs >= low) & (freqs <= high)
    return float(np.polyfit(np.log10(freqs[band]), 10 * np.log10(psd[band]), 1)[0])


def test_pink_noise_falls_10_db_per_decade():
    assert abs(spectral_slope(pink_noise(2 ** 18, 5).numpy()) + 10) < 1.5
    white = torch.randn(2 ** 18, generator=torch.Generator().manual_seed(5)).numpy()
    brown = np.cumsum(white)
    assert abs(spectral_slope(white) + 10) > 1.5 and abs(spectral_slope(brown) + 10) > 1.5  # the check can fail


def reference_mixture(data: Path, pool: Path, utt: str, plan: str, snr: float, seed: int) -> np.ndarray:
    """One mixture as add_noise first made it (every talker decoded at each use, torch's default threads), as the
    16-bit samples it writes."""
    data, pool = load_data_dir(data), load_data_dir(pool)
    clean = read_utterance(data, utt)
    kind, arg = plan.split(" ", 1)
    noise = torch.zeros(clean.numel())
    if kind == "pink":
        noise = pink_noise(clean.numel(), int(arg.split("=")[1]))
    rng = random.Random(augment._utt_seed(seed, "offset", utt))
    for talker in arg.split(",") if kind == "babble" else []:
        wave = read_utterance(pool, talker)
        start = rng.randrange(wave.numel())
        looped = wave.repeat((start + clean.numel()) // wave.numel() + 1)[start:start + clean.numel()]
        noise += looped / math.sqrt(float(wave.double().pow(2).mean()))
    buffer = io.BytesIO()
    sf.write(buffer, limit_peak(mix_at_snr(clean, noise, snr))[0].numpy(), 16000, format="FLAC", subtype="PCM_16")
    return sf.read(io.BytesIO(buffer.getvalue()), dtype="int16")[0]


@needs_shared
@pytest.mark.parametrize("noise, snr", [("babble", 10.0), ("babble", 0.0), ("pink", 10.0), ("pink", 0.0)])
def test_ood_noise_on_real_speech(so_dir, fsdd_dir, tmp_path, noise, snr):
    """The recipe's OOD sets: FSDD babble and pink noise at the SNR asked, the samples of the first implementation."""
    out = add_noise(so_dir, tmp_path / "noisy", snr, noise=noise, seed=2, noise_source_dir=fsdd_dir)
    data, clean = load_data_dir(out), load_data_dir(so_dir)
    pool = load_data_dir(fsdd_dir if noise == "babble" else so_dir)
    plan = read_kaldi_map(out / "utt2noise")
    for utt in clean.utt_ids:
        signal = read_utterance(clean, utt).numpy()
        mixture, _ = sf.read(data.wav_scp[utt], dtype="float32")
        noise_wave = augment._noise_for(utt, plan[utt], pool, len(signal), 2).numpy()
        assert abs(fitted_snr(mixture, signal, noise_wave) - snr) < 0.1, utt
        samples, _ = sf.read(data.wav_scp[utt], dtype="int16")
        assert np.array_equal(samples, reference_mixture(so_dir, pool.path, utt, plan[utt], snr, 2)), utt


@needs_shared
def test_fsdd_babble_holds_no_evaluated_speaker(so_dir, fsdd_dir, tmp_path, caplog):
    out = add_noise(so_dir, tmp_path / "fsdd", 0.0, noise="babble", seed=0, noise_source_dir=fsdd_dir)
    fsdd, clean = load_data_dir(fsdd_dir), load_data_dir(so_dir)
    plan = read_kaldi_map(out / "utt2noise")
    used = {fsdd.utt2spk[t] for entry in plan.values() for t in entry.split(" ", 1)[1].split(",")}
    assert used <= set(fsdd.utt2spk.values()) and not used & set(clean.utt2spk.values())
    assert load_yaml(out / "noise.yaml")["noise_speakers"] == sorted(used)
    assert "speaker(s) of" not in caplog.text
    # a pool sharing the source's voices is reported
    twin = write_data_dir(tmp_path / "twin", {f"z{u}": clean.resolve(p) for u, p in clean.wav_scp.items()},
                          utt2spk={f"z{u}": s for u, s in clean.utt2spk.items()})
    add_noise(so_dir, tmp_path / "shared", 0.0, noise="babble", seed=0, noise_source_dir=twin)
    assert f"holds 4 speaker(s) of {so_dir}" in caplog.text


@needs_shared
def test_babble_talkers_are_decoded_once(so_dir, fsdd_dir, tmp_path, monkeypatch):
    reads: Counter = Counter()
    real_read = augment.read_utterance

    def counting_read(data, utt, *args, **kwargs):
        reads[utt] += 1
        return real_read(data, utt, *args, **kwargs)

    monkeypatch.setattr(augment, "read_utterance", counting_read)
    runs = {}
    for budget in (augment.TALKER_CACHE_BYTES, 0):  # 0: every draw decoded again, as before the cache
        monkeypatch.setattr(augment, "TALKER_CACHE_BYTES", budget)
        reads.clear()
        runs[budget] = add_noise(so_dir, tmp_path / f"b{budget}", 5.0, noise="babble", seed=1,
                                 noise_source_dir=fsdd_dir)
        draws = Counter(t for entry in read_kaldi_map(runs[budget] / "utt2noise").values()
                        for t in entry.split(" ", 1)[1].split(","))
        assert sum(draws.values()) > 2 * len(draws)  # 8 utterances, 6 talkers: each drawn several times
        assert {t: reads[t] for t in draws} == ({t: 1 for t in draws} if budget else dict(draws))
    cached, uncached = (load_data_dir(path) for path in runs.values())
    for utt in cached.utt_ids:
        assert np.array_equal(sf.read(cached.wav_scp[utt], dtype="int16")[0],
                              sf.read(uncached.wav_scp[utt], dtype="int16")[0]), utt


# ----------------------------------------------------------------------------- bad inputs and CLI


@pytest.mark.parametrize("call, message", [
    (lambda s, o: split_by_speaker(s, o / "a", o / "b", fraction=0.0), r"fraction must be in \(0, 1\)"),
    (lambda s, o: split_by_speaker(s, o / "a", o / "b", fraction=1.0), r"fraction must be in \(0, 1\)"),
    (lambda s, o: split_by_speaker(s, o / "a", o / "b", fraction=float("nan")), r"fraction must be in"),
    (lambda s, o: split_by_speaker(s, o / "a", o / "a"), "output dirs must differ"),
    (lambda s, o: add_noise(s, o / "n", float("inf")), "SNR must be a finite number"),
    (lambda s, o: add_noise(s, o / "n", "loud"), "SNR must be a finite number"),
    (lambda s, o: add_noise(s, o / "n", 5, noise="white"), "unknown noise type 'white'; choose from babble, pink"),
    (lambda s, o: add_noise(s, s, 5), "output dir must differ from the source dir"),
    (lambda s, o: add_noise(o / "missing", o / "n", 5), "data directory not found"),
    (lambda s, o: speed_perturb(s, o / "n", factors=()), "speed factors: none given"),
    (lambda s, o: speed_perturb(s, o / "n", factors=(0.9, 0.0)), r"speed factor must be in \[0.5, 2\]"),
    (lambda s, o: speed_perturb(s, o / "n", factors=(0.9, 0.90)), "not distinct"),
])
def test_bad_inputs_are_one_line_errors(synth_dir, tmp_path, call, message):
    with pytest.raises(DataError, match=message) as info:
        call(synth_dir, tmp_path)
    assert "\n" not in str(info.value)
    assert not any((tmp_path / name).exists() for name in ("a", "b", "n"))  # validated before writing


def test_empty_or_too_small_sources(tmp_path, synth_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "wav.scp").write_text("")
    with pytest.raises(DataError, match="wav.scp: file is empty"):
        add_noise(tmp_path / "empty", tmp_path / "n", 5)
    src = load_data_dir(synth_dir)
    small = write_data_dir(tmp_path / "small", {u: src.resolve(src.wav_scp[u]) for u in ("a_1", "a_2", "b_1")})
    with pytest.raises(DataError, match="babble noise source has 2 utterances other than 'a_1'; need at least 3"):
        add_noise(small, tmp_path / "n", 5)
    with pytest.raises(DataError, match="1 speaker"):
        split_by_speaker(write_data_dir(tmp_path / "one", {"a_1": src.resolve(src.wav_scp["a_1"])},
                                        utt2spk={"a_1": "a"}), tmp_path / "x", tmp_path / "y")
    assert not (tmp_path / "n").exists() and not (tmp_path / "x").exists()


def test_cli(synth_dir, tmp_path, capsys):
    assert main(["split-speakers", "--src", str(synth_dir), "--out-a", str(tmp_path / "tr"),
                 "--out-b", str(tmp_path / "dv"), "--fraction", "0.3", "--seed", "1"]) == 0
    assert len(load_data_dir(tmp_path / "tr")) + len(load_data_dir(tmp_path / "dv")) == 5
    assert main(["split-accent", "--src", str(synth_dir), "--out-us", str(tmp_path / "us"),
                 "--out-nonus", str(tmp_path / "nonus")]) == 0
    assert load_data_dir(tmp_path / "us").utt_ids == ["a_1", "a_2"]
    assert main(["speed-perturb", "--src", str(synth_dir), "--out", str(tmp_path / "sp"), "--factors", "0.9"]) == 0
    assert load_data_dir(tmp_path / "sp").utt_ids[0] == "sp0.9-a_1"
    capsys.readouterr()
    assert main(["add-noise", "--src", str(synth_dir), "--out", str(tmp_path / "n"), "--snr", "10",
                 "--noise", "white"]) == 1
    err = capsys.readouterr().err
    assert err == "error: add-noise: unknown noise type 'white'; choose from babble, pink\n"
    assert main(["split-speakers", "--src", str(synth_dir), "--out-a", "a", "--out-b", "b", "--fraction", "2"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_module_entry_point(tmp_path):
    """``python -m softtok.recipes.sets`` runs and reports data errors as one line."""
    out = subprocess.run([sys.executable, "-m", "softtok.recipes.sets", "split-age", "--src", str(tmp_path / "no"),
                          "--out-adults", str(tmp_path / "a"), "--out-children", str(tmp_path / "c")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 1 and out.stderr.splitlines() == [f"error: split-age: {tmp_path / 'no'}: "
                                                               "data directory not found"]
