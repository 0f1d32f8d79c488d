"""Phone transcripts, the phone tokenizer, CTC forced alignment and frame-label filling on hand-made cases."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from softtok.analysis.align import align_one, fill_labels, to_feature_frames
from softtok.analysis.phones import (clean_phone, phone_transcripts, read_lexicon, read_text_phone, source_utt,
                                     write_phone_text)
from softtok.downstream.asr.model import PhoneTokenizer, tokenizer_class
from softtok.tokenizers.datadir import DataError, read_kaldi_map


def span(start: int, end: int) -> SimpleNamespace:
    return SimpleNamespace(start=start, end=end)


def test_clean_phone_and_source_utt():
    assert clean_phone("AO0_I") == "AO" and clean_phone("AO0_I", keep_stress=True) == "AO0"
    assert clean_phone("UH") == "UH" and clean_phone("K_S") == "K"
    assert source_utt("sp0.9-000010011") == "000010011" and source_utt("000010011") == "000010011"


@pytest.fixture
def resource(tmp_path):
    (tmp_path / "text-phone").write_text("u1.0\tW_B IY0_E\nu1.1\tK_B AO0_I L_E\nu1.10\tIH0_B T_E\n"
                                         "u1.2\tB_B EH0_I R_E\nu2.0\tZ_B IH1_I R_I OW0_E\n")
    (tmp_path / "lexicon.txt").write_text("CALL\tK AO1 L\nCALL\tK AA1 L\nWE\tW IY1\n")
    (tmp_path / "text").write_text("sp1.1-u1 WE CALL BEAR\nu1 WE CALL BEAR\nu3 we call\n")
    return tmp_path


def test_phone_transcripts_text_phone_first_then_lexicon(resource):
    tp = read_text_phone(resource / "text-phone")
    assert tp["u1"][-1] == ["IH", "T"]  # word 10 sorts numerically after word 2
    assert tp["u1"][:3] == [["W", "IY"], ["K", "AO", "L"], ["B", "EH", "R"]]
    lex = read_lexicon(resource / "lexicon.txt")
    assert lex["CALL"] == ["K", "AO", "L"]  # first pronunciation
    text = {"u1": "WE CALL BEAR IT", "sp0.9-u1": "WE CALL BEAR IT", "u3": "we call"}
    out = phone_transcripts(text, tp, lex)
    assert out["u1"] == out["sp0.9-u1"] == "W IY K AO L B EH R IH T"
    assert out["u3"] == "W IY K AO L"  # not in text-phone: lexicon
    with pytest.raises(DataError, match="no pronunciation for word 'BEAR' \\(utterance u3\\)"):
        phone_transcripts({"u3": "WE BEAR"}, tp, lex, "lexicon.txt")


def test_write_phone_text_word_count_mismatch_uses_lexicon(resource):
    # u1's text has 3 words, text-phone 4: the lexicon must cover it, and BEAR is missing there
    with pytest.raises(DataError, match="'BEAR'"):
        write_phone_text(str(resource / "text"), str(resource / "out"), str(resource / "text-phone"),
                         str(resource / "lexicon.txt"))
    (resource / "lexicon.txt").write_text("BEAR B EH1 R\nCALL K AO1 L\nWE W IY1\n")
    res = write_phone_text(str(resource / "text"), str(resource / "out"), str(resource / "text-phone"),
                           str(resource / "lexicon.txt"), keep_stress=True)
    assert res["utts"] == 3 and read_kaldi_map(resource / "out")["u3"] == "W IY1 K AO1 L"


def test_phone_tokenizer_roundtrip():
    tok = PhoneTokenizer.from_texts(["K AO L", "W IY K"])
    assert tok.token_list == ["<blank>", "<unk>", "AO", "IY", "K", "L", "W", "<sos/eos>"]
    assert tok.encode("K AO ZH") == [4, 2, 1]
    assert tok.decode([4, 2, 0, 7]) == "K AO"
    assert tokenizer_class("phone") is PhoneTokenizer
    with pytest.raises(ValueError, match="token_type"):
        tokenizer_class("bpe")


def test_fill_labels_by_hand():
    # frames 0..11; A at 2, B at 3..4, C at 10: sil before A; A|B touch; B..C gap of 5 frames (5..9),
    # max_extend 2: B takes 5-6, C takes 8-9, frame 7 is sil; after C: sil.
    labels = fill_labels([span(2, 3), span(3, 5), span(10, 11)], ["A", "B", "C"], 12, max_extend=2)
    assert labels == ["sil", "sil", "A", "B", "B", "B", "B", "sil", "C", "C", "C", "sil"]
    # a short gap is split at its middle, the left phone taking the odd frame
    assert fill_labels([span(0, 1), span(4, 5)], ["A", "B"], 5, max_extend=10) == ["A", "A", "A", "B", "B"]
    with pytest.raises(ValueError, match="2 aligned spans for 3 phones"):
        fill_labels([span(0, 1), span(2, 3)], ["A", "B", "C"], 4, 1)


def test_to_feature_frames():
    assert to_feature_frames(["a", "b", "c"], 3) == ["a", "b", "c"]
    assert to_feature_frames(["a", "b"], 4) == ["a", "a", "b", "b"]  # 2x subsampled encoder
    assert to_feature_frames(["a", "b", "c"], 7) == ["a", "a", "a", "b", "b", "c", "c"]


def test_align_one_follows_the_posteriors():
    # vocab: 0 blank, 1 A, 2 B. Frames 0-1 favour A, 2 blank, 3-5 B: targets A B A would be impossible in
    # fewer than 3 frames; here A B must put A on frames 0-1 and B on 3-5.
    probs = torch.full((6, 3), 0.05)
    probs[0, 1] = probs[1, 1] = 0.9
    probs[2, 0] = 0.9
    probs[3:, 2] = 0.9
    spans, lp = align_one(torch.log(probs / probs.sum(1, keepdim=True)), [1, 2])
    assert [(s.token, s.start, s.end) for s in spans] == [(1, 0, 2), (2, 3, 6)]
    assert lp < 0
    # a repeated phone needs a blank between its two copies: three frames for A A
    spans, _ = align_one(torch.log(torch.full((3, 3), 1 / 3)), [1, 1])
    assert len(spans) == 2 and spans[0].end <= spans[1].start - 1
    with pytest.raises(RuntimeError):
        align_one(torch.log(torch.full((2, 3), 1 / 3)), [1, 1])  # too few frames
