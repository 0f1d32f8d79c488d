"""Preparation of the full-scale ASR recipe's corpora (LibriSpeech, TED-LIUM 2, CHiME-4, L2-ARCTIC, ERJ) on tiny trees
in the real layouts (tests/corpus_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from corpus_fixtures import (make_chime4, make_erj, make_l2arctic, make_librispeech, make_tedlium2, tone,
                             write_sphere)
from softtok.cli import main as cli_main
from softtok.recipes import sets, subsets
from softtok.recipes.corpora.chime4 import normalize_wsj, prepare_chime4
from softtok.recipes.corpora.common import check_sphere
from softtok.recipes.corpora.erj import prepare_erj
from softtok.recipes.corpora.l2arctic import L2ARCTIC_SPEAKERS, prepare_l2arctic
from softtok.recipes.corpora.librispeech import prepare_librispeech
from softtok.recipes.corpora.tedlium2 import normalize_tedlium, prepare_tedlium2
from softtok.tokenizers.audio import read_utterance
from softtok.tokenizers.datadir import DataError, load_data_dir, read_kaldi_map


def _one_line(exc: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def test_librispeech_subsets_text_speakers_and_audio(tmp_path):
    corpus = make_librispeech(tmp_path / "corpus")
    dirs = prepare_librispeech(corpus.parent, tmp_path / "data")  # the parent of LibriSpeech/ works too
    assert set(dirs) == {"train_clean_100", "dev_clean", "dev_other", "test_clean", "test_other"}
    train = load_data_dir(dirs["train_clean_100"], require_text=True)
    assert len(train) == 12 and train.text["100-2000-0000"] == "HELLO WORLD"
    assert train.utt2spk["101-2001-0001"] == "101"  # the reader, not reader-chapter
    assert read_kaldi_map(dirs["train_clean_100"] / "spk2gender") == {"100": "m", "101": "f"}
    wave = read_utterance(train, "100-2000-0000")
    assert wave.shape[0] == int(0.6 * 16000)


def test_librispeech_errors_before_writing(tmp_path):
    corpus = make_librispeech(tmp_path / "corpus", {"dev-clean": 2, "test-clean": 2})
    with pytest.raises(DataError) as exc:
        prepare_librispeech(corpus, tmp_path / "data")
    _one_line(exc, "train-clean-100", "not found", "openslr.org/resources/12")
    (corpus / "test-clean" / "110" / "2000" / "110-2000-0000.flac").unlink()
    with pytest.raises(DataError) as exc:
        prepare_librispeech(corpus, tmp_path / "data", subsets=("dev-clean", "test-clean"))
    _one_line(exc, "110-2000-0000.flac", "not found")
    assert not (tmp_path / "data").exists()  # dev-clean was fine, but nothing was written


def test_sphere_reading_and_shorten_refusal(tmp_path):
    ok = write_sphere(tmp_path / "a.sph", tone(0.5))
    assert check_sphere(ok).frames == 8000 and check_sphere(ok).samplerate == 16000
    shorten = write_sphere(tmp_path / "b.sph", tone(0.5), coding="pcm,embedded-shorten-v2.00")
    with pytest.raises(DataError) as exc:
        check_sphere(shorten)
    _one_line(exc, "b.sph", "shorten", "sph2pipe")


def test_tedlium_text_normalisation():
    assert normalize_tedlium("{NOISE} so it 's the(2) <unk> story") == "so it's the story"
    assert normalize_tedlium("{COUGH}") == ""


def test_tedlium2_segments_skip_ignored_and_clip(tmp_path):
    corpus = make_tedlium2(tmp_path)
    dirs = prepare_tedlium2(corpus, tmp_path / "data")
    assert set(dirs) == {"tedlium2_dev", "tedlium2_test"}
    test = load_data_dir(dirs["tedlium2_test"], require_text=True)
    assert len(test) == 6  # 3 scored segments x 2 talks; the ignore_time_segment_in_scoring lines are gone
    utt = "Speaker0_2010TEST-0000050-0000160"
    assert test.text[utt] == "so it's the story"
    last = test.segments["Speaker0_2010TEST-0000280-0000400"]
    assert last.end == 4.0  # clipped to the talk's 4 s of audio
    assert read_utterance(test, utt).shape[0] == int(1.1 * 16000)
    (corpus / "test" / "sph" / "Speaker1_2010TEST.sph").unlink()
    with pytest.raises(DataError) as exc:
        prepare_tedlium2(corpus, tmp_path / "data2")
    _one_line(exc, "Speaker1_2010TEST.sph", "not found")


def test_chime4_et05_real_and_simu(tmp_path):
    corpus = make_chime4(tmp_path)
    dirs = prepare_chime4(corpus, tmp_path / "data")
    assert set(dirs) == {"chime4_et05_real", "chime4_et05_simu"}
    real = load_data_dir(dirs["chime4_et05_real"], require_text=True)
    assert len(real) == 8 and "F05_440C0200_BUS_REAL" in real.text
    assert real.text["F05_440C0200_BUS_REAL"] == "hello world word"  # [door_slam] dropped, *word* unmarked
    assert real.utt2spk["F06_441C0201_CAF_REAL"] == "F06"
    assert normalize_wsj("<NOISE> a ~ b:c *d*") == "a bc d"
    dot = corpus / "data" / "transcriptions" / "et05_simu.dot_all"
    dot.write_text("\n".join(dot.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(DataError) as exc:
        prepare_chime4(corpus, tmp_path / "data2")
    _one_line(exc, "F05_440C0200_BUS", "no transcription", "et05_simu.dot_all")
    with pytest.raises(DataError) as exc:
        prepare_chime4(tmp_path / "nowhere", tmp_path / "data3")
    _one_line(exc, "et05_real.dot_all", "not found", "chimechallenge.org")


def test_l2arctic_speakers_l1_and_per_l1_split(tmp_path):
    corpus = make_l2arctic(tmp_path, per_speaker=2)
    dirs = prepare_l2arctic(corpus, tmp_path / "data")
    data = load_data_dir(dirs["l2arctic"], require_text=True)
    assert len(data) == 48 and data.text["ABA_arctic_a0001"] == "Hello world"
    spk2l1 = read_kaldi_map(dirs["l2arctic"] / "spk2l1")
    assert len(spk2l1) == 24 and spk2l1["TXHC"] == "mandarin" and read_kaldi_map(dirs["l2arctic"] / "spk2gender")["SKA"] == "f"
    assert sorted(set(spk2l1.values())) == ["arabic", "hindi", "korean", "mandarin", "spanish", "vietnamese"]
    assert read_utterance(data, "ABA_arctic_a0001").shape[0] == int(0.6 * 16000)  # 44.1 kHz read at 16 kHz
    outs = subsets.split_by_attribute(dirs["l2arctic"], tmp_path / "data" / "l2arctic", "spk2l1")
    assert [p.name for p in outs] == [f"l2arctic_{l1}" for l1 in sorted(set(spk2l1.values()))]
    assert set(load_data_dir(outs[0]).utt2spk.values()) == {"ABA", "SKA", "YBAA", "ZHAA"}
    assert len(L2ARCTIC_SPEAKERS) == 24


def test_l2arctic_errors(tmp_path):
    corpus = make_l2arctic(tmp_path, speakers=["ABA", "SKA"])
    with pytest.raises(DataError) as exc:
        prepare_l2arctic(corpus, tmp_path / "data")
    _one_line(exc, "ASI", "not found", "psi.engr.tamu.edu")
    (corpus / "SKA" / "transcript" / "arctic_a0001.txt").unlink()
    with pytest.raises(DataError) as exc:
        prepare_l2arctic(corpus, tmp_path / "data", speakers=["ABA", "SKA"])
    _one_line(exc, "arctic_a0001.txt", "transcript")
    with pytest.raises(DataError, match="unknown L2-ARCTIC speaker 'BDL'"):
        prepare_l2arctic(corpus, tmp_path / "data", speakers=["BDL"])


def test_erj_manifest(tmp_path):
    corpus = make_erj(tmp_path)
    data = load_data_dir(prepare_erj(corpus, tmp_path / "data")["erj"], require_text=True)
    assert len(data) == 4 and data.utt2spk["JE01_S001"] == "JE01"
    assert read_kaldi_map(data.path / "spk2gender") == {"JE00": "m", "JE01": "f"}
    with pytest.raises(DataError) as exc:
        prepare_erj(tmp_path / "elsewhere", tmp_path / "data")
    _one_line(exc, "softtok_erj.tsv", "not found", "NII-SRC")
    (corpus / "softtok_erj.tsv").write_text("JE00_S000\tJE00\twav/JE00/S000.wav\n")
    with pytest.raises(DataError, match="expected utt_id<TAB>speaker"):
        prepare_erj(corpus, tmp_path / "data")


def test_cli_prepare_lists_the_new_corpora(tmp_path, capsys):
    corpus = make_l2arctic(tmp_path)
    assert cli_main(["prepare", "--corpus", "l2arctic", "--corpus-dir", str(corpus), "--out-dir",
                     str(tmp_path / "data")]) == 0
    assert (tmp_path / "data" / "l2arctic" / "spk2l1").is_file()
    assert cli_main(["prepare", "--corpus", "tedlium2", "--corpus-dir", str(tmp_path / "none"), "--out-dir",
                     str(tmp_path / "data")]) == 1


def test_combine_dev_sets(tmp_path):
    dirs = prepare_librispeech(make_librispeech(tmp_path / "c", {"dev-clean": 2, "dev-other": 3}), tmp_path / "data",
                               subsets=("dev-clean", "dev-other"))
    dev = load_data_dir(subsets.combine_data_dirs([dirs["dev_clean"], dirs["dev_other"]], tmp_path / "data" / "dev"),
                        require_text=True)
    assert len(dev) == 5 and set(dev.utt2spk.values()) == {"100", "101", "110", "111"}
    with pytest.raises(DataError, match="also in an earlier source dir"):
        subsets.combine_data_dirs([dirs["dev_clean"], dirs["dev_clean"] / "."], tmp_path / "data" / "x")
    assert sets.main(["combine", "--src", str(dirs["dev_clean"]), "--out", str(dirs["dev_clean"])]) == 1
