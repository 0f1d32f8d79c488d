"""The corpus registry and ``softtok prepare``: every corpus, its download location, ``--corpus-conf`` options; and
speechocean762 and FSDD on the real corpora."""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import FSDD, SPEECHOCEAN, needs_shared
from corpus_fixtures import make_ljspeech, make_speechocean, make_timit
from softtok.cli import main as cli_main
from softtok.recipes.corpora import CORPORA, corpus_options, prepare_corpus
from softtok.recipes.corpora.fsdd import prepare_fsdd
from softtok.recipes.corpora.speechocean762 import prepare_speechocean762
from softtok.recipes.voc_data import main as voc_data_main
from softtok.tokenizers.audio import read_utterance
from softtok.tokenizers.datadir import DataError, load_data_dir

ALL_CORPORA = {"speechocean762", "fsdd", "librispeech", "tedlium2", "chime4", "l2arctic", "erj", "ljspeech", "timit",
               "piper_joe", "conversion_source"}


def _files(folder: Path) -> dict:
    """Every file under ``folder`` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_registry_holds_every_corpus():
    assert set(CORPORA) == ALL_CORPORA
    for name, corpus in CORPORA.items():
        prepare = corpus.preparer()
        assert prepare.__name__ == f"prepare_{name}" and corpus.download.strip()
        assert list(inspect.signature(prepare).parameters)[:2] == ["corpus_dir", "out_dir"], name
    assert corpus_options("ljspeech") == ["n_test", "n_dev"]
    assert corpus_options("piper_joe") == ["hours", "n_heldout", "seed", "voice", "n_dev", "exclude_text"]
    assert corpus_options("timit") == []


def test_checksums_are_sha256_hex():
    checksums = {}
    for module in {corpus.module for corpus in CORPORA.values()}:
        checksums.update(getattr(importlib.import_module(f"softtok.recipes.corpora.{module}"), "CHECKSUMS", {}))
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in checksums.values())
    assert {"train-clean-100.tar.gz", "test-other.tar.gz", "TEDLIUM_release2.tar.gz",
            "LJSpeech-1.1.tar.bz2"} <= set(checksums)


def test_prepare_help_lists_every_corpus_and_download(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["prepare", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # help lines are wrapped
    for name, corpus in CORPORA.items():
        assert f"{name}: {' '.join(corpus.download.split())}" in text, name
    assert "--corpus-conf" in text


def test_cli_prepare_ljspeech_and_timit_with_options(tmp_path):
    lj, timit = make_ljspeech(tmp_path), make_timit(tmp_path)
    out = tmp_path / "data"
    assert cli_main(["prepare", "--corpus", "ljspeech", "--corpus-dir", str(lj), "--out-dir", str(out),
                     "--corpus-conf", "{n_test: 3, n_dev: 2}"]) == 0
    assert {name: len(load_data_dir(out / name)) for name in ("train", "dev", "test_id")} == \
        {"train": 7, "dev": 2, "test_id": 3}
    assert cli_main(["prepare", "--corpus", "timit", "--corpus-dir", str(timit), "--out-dir", str(out / "timit")]) == 0
    assert len(load_data_dir(out / "timit" / "test_ood")) == 4  # SA1 skipped
    # the python -m softtok.recipes.voc_data alias writes the same files
    assert voc_data_main(["ljspeech", "--corpus", str(lj), "--out", str(tmp_path / "alias"), "--n-test", "3",
                          "--n-dev", "2"]) == 0
    assert _files(tmp_path / "alias") == {k: v for k, v in _files(out).items() if not k.startswith("timit")}


def test_cli_prepare_piper_joe_with_a_fake_voice(tmp_path, monkeypatch):
    """piper_joe's options through --corpus-conf; a fake voice stands in for piper (tests/test_corpora_voc.py)."""
    from softtok.recipes.corpora import piper_joe

    so = make_speechocean(tmp_path)
    voice = tmp_path / "fake.onnx"
    voice.write_bytes(b"not a model")
    (tmp_path / "fake.onnx.json").write_text("{}")
    monkeypatch.setattr(piper_joe, "_import_piper", lambda: None)
    monkeypatch.setattr(piper_joe, "_load_voice", lambda model, config: object())
    tone = np.sin(np.arange(22050) / 5.0) * 0.1
    monkeypatch.setattr(piper_joe, "_synthesize", lambda v, sentence: (tone[:2205 * len(sentence.split())], 22050))
    conf = f"{{hours: 0.0001, n_heldout: 1, n_dev: 1, voice: {voice}}}"
    assert cli_main(["prepare", "--corpus", "piper_joe", "--corpus-dir", str(so), "--out-dir", str(tmp_path / "joe"),
                     "--corpus-conf", conf]) == 0
    sizes = {name: len(load_data_dir(tmp_path / "joe" / name)) for name in ("train", "dev", "test_id")}
    assert sizes["dev"] == 1 and sizes["test_id"] == 1 and sizes["train"] >= 1
    assert (tmp_path / "joe" / "joe_audio" / "piper.yaml").is_file()


def test_cli_prepare_bad_corpus_conf_key_is_one_error_line(tmp_path, caplog):
    lj = make_ljspeech(tmp_path)
    assert cli_main(["prepare", "--corpus", "ljspeech", "--corpus-dir", str(lj), "--out-dir", str(tmp_path / "data"),
                     "--corpus-conf", "{n_tset: 3}"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert "'n_tset'" in errors[0] and "accepted: n_test, n_dev" in errors[0]
    assert not (tmp_path / "data").exists()  # refused before any work
    with pytest.raises(DataError, match="unknown corpus 'nope'"):
        prepare_corpus("nope", lj, tmp_path / "data")
    with pytest.raises(DataError, match=r"timit: unknown option 'n' \(accepted: none\)"):
        prepare_corpus("timit", lj, tmp_path / "data", n=3)


@needs_shared
def test_prepare_speechocean762(tmp_path):
    dirs = prepare_speechocean762(SPEECHOCEAN, tmp_path / "data")
    test = load_data_dir(dirs["test"], require_text=True)
    assert len(test) == 2500 and len(load_data_dir(dirs["train"])) == 2500
    utt = test.utt_ids[0]
    assert os.path.isabs(test.wav_scp[utt]) and read_utterance(test, utt).numel() > 16000
    assert (dirs["test"] / "spk2age").is_file() and (dirs["test"] / "spk2utt").is_file()


@needs_shared
def test_prepare_fsdd(tmp_path):
    data = load_data_dir(prepare_fsdd(FSDD, tmp_path / "data")["fsdd"], require_text=True)
    assert len(data) == 3000 and data.text["george_7_03"] == "SEVEN" and data.utt2spk["george_7_03"] == "george"
    assert read_utterance(data, "george_7_03").numel() > 4000
    assert "German" in (tmp_path / "data" / "fsdd" / "spk2accent").read_text()


def test_prepare_refuses_wrong_folder(tmp_path):
    with pytest.raises(DataError, match="is this a speechocean762 folder"):
        prepare_speechocean762(tmp_path, tmp_path / "out")
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "hello.wav").write_bytes(b"")
    with pytest.raises(DataError, match="hello.wav: expected <digit>_<speaker>_<index>"):
        prepare_fsdd(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # validation happens before anything is written
