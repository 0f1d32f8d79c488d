"""Reuse decided by content, not by path: feature and token shards, trained models' codebooks (issue 15, class 1).

Each case here passed silently on the code before fingerprints: a finished shard was reused whatever the feature
spec or input data, and a trained model named its codebook only by path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import write_wave
from softtok.tokenizers.datadir import write_data_dir
from softtok.tokenizers.dump_features import dump_features
from softtok.tokenizers.fileio import load_scp_dict, load_yaml
from softtok.tokenizers.jobs import run_dump_tokens, run_learn_kmeans

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_ASR = {"seed": 0, "max_epoch": 1, "batch_frames": 3000, "lr": 1e-3, "warmup_steps": 1, "keep_nbest": 1,
            "num_threads": 1,
            "model": {"embed_dim": 8, "encoder": "conformer",
                      "encoder_conf": {"output_size": 8, "attention_heads": 2, "linear_units": 8, "num_blocks": 1,
                                       "input_layer": "conv2d2"},
                      "decoder_conf": {"attention_heads": 2, "linear_units": 8, "num_blocks": 1}}}


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (relative name → bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def outputs(folder: Path) -> dict:
    """The files a dump leaves, less the .done markers (they hold timings)."""
    return {k: v for k, v in snapshot(folder).items() if not k.endswith(".done")}


def test_layer_change_recomputes_the_shards(tmp_path, tone_dir):
    """The issue's example: dumping --layer 1 into a folder of layer-2 shards exited 0 at once, and feats.yaml then
    claimed layer 1 over layer-2 matrices."""
    from corpus_fixtures import tiny_hubert

    ckpt = str(tiny_hubert(tmp_path / "hubert"))
    out = tmp_path / "feats"
    dump_features(str(tone_dir), "hubert", str(out), checkpoint=ckpt, layer=2)
    layer2 = load_scp_dict(out / "feats.scp")
    dump_features(str(tone_dir), "hubert", str(out), checkpoint=ckpt, layer=1)
    dump_features(str(tone_dir), "hubert", str(tmp_path / "fresh1"), checkpoint=ckpt, layer=1)
    layer1, fresh = load_scp_dict(out / "feats.scp"), load_scp_dict(tmp_path / "fresh1" / "feats.scp")
    assert load_yaml(out / "feats.yaml")["layer"] == 1
    assert all(np.array_equal(layer1[k], fresh[k]) and not np.allclose(layer1[k], layer2[k]) for k in fresh)


@pytest.mark.parametrize("change", ["option", "compress", "feature"])
def test_feature_spec_change_recomputes(tmp_path, tone_dir, change, caplog):
    out = tmp_path / "feats"
    dump_features(str(tone_dir), "fbank", str(out), num_mel_bins=40)
    second = {"option": ("fbank", {"num_mel_bins": 23}), "compress": ("fbank", {"num_mel_bins": 40, "compress": True}),
              "feature": ("mfcc", {})}[change]
    with caplog.at_level(logging.INFO):
        dump_features(str(tone_dir), second[0], str(out), **second[1])
    dump_features(str(tone_dir), second[0], str(tmp_path / "fresh"), **second[1])
    assert outputs(out)["feats.yaml"] == outputs(tmp_path / "fresh")["feats.yaml"]
    got, want = load_scp_dict(out / "feats.scp"), load_scp_dict(tmp_path / "fresh" / "feats.scp")
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert "made from other inputs" in caplog.text and "recomputing" in caplog.text


def test_input_listing_change_recomputes(tmp_path, tone_dir):
    """Other utterances behind the same data dir path, and one audio file rewritten in place."""
    out = tmp_path / "feats"
    dump_features(str(tone_dir), "mfcc", str(out), nj=2)
    wav = {"utt_a": str(tmp_path / "a.wav"), "utt_b": str(tmp_path / "b.flac"), "utt_d": str(tmp_path / "d.wav")}
    write_wave(tmp_path / "d.wav", 0.1 * np.sin(2 * np.pi * 550 * np.arange(9000) / 16000))
    write_data_dir(tone_dir, wav, {u: "HELLO" for u in wav})
    dump_features(str(tone_dir), "mfcc", str(out), nj=2)
    assert list(load_scp_dict(out / "feats.scp")) == ["utt_a", "utt_b", "utt_d"]
    before = load_scp_dict(out / "feats.scp")["utt_a"]
    write_wave(tmp_path / "a.wav", 0.1 * np.sin(2 * np.pi * 260 * np.arange(20000) / 16000))  # same path
    dump_features(str(tone_dir), "mfcc", str(out), nj=2)
    after = load_scp_dict(out / "feats.scp")["utt_a"]
    assert after.shape[0] > before.shape[0] and load_yaml(out / "feats.yaml")["num_utts"] == 3


def test_same_inputs_resume_and_rerun_is_byte_identical(tmp_path, tone_dir):
    out = tmp_path / "feats"
    dump_features(str(tone_dir), "mfcc", str(out), shard="0/2")
    ark0 = out / "shards" / "feats_0_2.ark"
    mtime = ark0.stat().st_mtime_ns
    dump_features(str(tone_dir), "mfcc", str(out), nj=2)  # shard 0 kept, shard 1 made, merged
    first = snapshot(out)
    dump_features(str(tone_dir), "mfcc", str(out), nj=2)
    assert ark0.stat().st_mtime_ns == mtime and snapshot(out) == first


def test_shard_of_an_older_softtok_is_recomputed(tmp_path, tone_dir):
    out = tmp_path / "feats"
    dump_features(str(tone_dir), "mfcc", str(out))
    done = out / "shards" / "feats_0_1.done"
    stats = load_yaml(done)
    del stats["fingerprint"]
    done.write_text(yaml.safe_dump(stats))
    (out / "shards" / "feats_0_1.ark").write_bytes(b"stale")
    dump_features(str(tone_dir), "mfcc", str(out))
    assert "fingerprint" in load_yaml(done) and len(load_scp_dict(out / "feats.scp")) == 3


def test_merge_refuses_a_shard_of_other_inputs(tmp_path, tone_dir):
    out = tmp_path / "feats"
    dump_features(str(tone_dir), "fbank", str(out), shard="0/2", num_mel_bins=40)
    dump_features(str(tone_dir), "fbank", str(out), shard="1/2", num_mel_bins=23)
    assert not (out / "feats.scp").exists()  # the last task did not merge mismatched shards
    with pytest.raises(ValueError, match=r"cannot merge 2 shards: 1 not done \(.*feats_0_2.done: made from other "
                                         r"inputs: spec.dim 40 → 23; spec.num_mel_bins 40 → 23\)"):
        dump_features(str(tone_dir), "fbank", str(out), merge=2, num_mel_bins=23)


def test_failed_recompute_leaves_no_merged_files(tmp_path, tone_dir):
    """A recompute that fails must not leave the old feats.scp/feats.yaml describing the folder."""
    out = tmp_path / "feats"
    dump_features(str(tone_dir), "mfcc", str(out))
    (tone_dir / "audio" / "c.wav").write_bytes(b"not audio any more")
    with pytest.raises(ValueError, match="utt_c"):
        dump_features(str(tone_dir), "mfcc", str(out))
    assert not any((out / name).exists() for name in ("feats.scp", "feats.yaml", "utt2num_frames"))
    assert not [p for p in out.rglob("*") if ".tmp." in p.name]


@pytest.fixture
def feats_and_km(tmp_path, tone_dir):
    dump_features(str(tone_dir), "mfcc", str(tmp_path / "feats"))
    km = tmp_path / "km" / "k4.npy"
    run_learn_kmeans(str(tmp_path / "feats" / "feats.scp"), 4, "sklearn", str(km), n_init=1)
    return tmp_path / "feats" / "feats.scp", km


def test_token_shards_follow_redumped_features(tmp_path, tone_dir, feats_and_km):
    """Features re-dumped from other utterances behind the same feats.scp path: the tokens follow them."""
    feats, km = feats_and_km
    run_dump_tokens(str(feats), str(km), "hard", str(tmp_path / "tok"))
    wav = {"utt_a": str(tmp_path / "a.wav"), "utt_b": str(tmp_path / "b.flac")}
    write_data_dir(tone_dir, wav, {u: "HELLO" for u in wav})
    dump_features(str(tone_dir), "mfcc", str(feats.parent))
    run_dump_tokens(str(feats), str(km), "hard", str(tmp_path / "tok"))
    run_dump_tokens(str(feats), str(km), "hard", str(tmp_path / "fresh"))
    assert outputs(tmp_path / "tok") == outputs(tmp_path / "fresh")
    assert [line.split()[0] for line in (tmp_path / "tok" / "tokens.txt").read_text().splitlines()] == ["utt_a", "utt_b"]


def test_token_shards_follow_the_codebook_content_not_its_path(tmp_path, feats_and_km):
    feats, km = feats_and_km
    run_dump_tokens(str(feats), str(km), "soft", str(tmp_path / "tok"), tau=10.0)
    done = tmp_path / "tok" / "shards" / "tokens_0_1.done"
    mtime = done.stat().st_mtime_ns
    copy = tmp_path / "copy.npy"
    copy.write_bytes(km.read_bytes())
    run_dump_tokens(str(feats), str(copy), "soft", str(tmp_path / "tok"), tau=10.0)
    assert done.stat().st_mtime_ns == mtime  # same content elsewhere: reused
    run_learn_kmeans(str(feats), 4, "sklearn", str(km), n_init=1, seed=1)  # re-learned to the same path
    run_dump_tokens(str(feats), str(km), "soft", str(tmp_path / "tok"), tau=10.0)
    run_dump_tokens(str(feats), str(km), "soft", str(tmp_path / "fresh"), tau=10.0)
    got, want = load_scp_dict(tmp_path / "tok" / "tokens.scp"), load_scp_dict(tmp_path / "fresh" / "tokens.scp")
    assert all(np.array_equal(got[k], want[k]) for k in want)


@pytest.fixture
def trained(tmp_path, tone_dir, feats_and_km):
    from softtok.downstream.asr.train import train

    feats, km = feats_and_km
    (tmp_path / "asr.yaml").write_text(yaml.safe_dump(TINY_ASR))
    text = str(tone_dir / "text")
    train(str(tmp_path / "asr.yaml"), str(feats), text, str(feats), text, str(tmp_path / "asr"), "hard", str(km),
          device="cpu")
    return {"exp": tmp_path / "asr", "feats": feats, "km": km, "text": text}


def test_trained_model_refuses_a_relearned_codebook(tmp_path, trained, caplog):
    from softtok.downstream.asr.decode import decode
    from softtok.downstream.training import CodebookChanged
    from softtok.downstream.vocoder.mel import inference_head
    from softtok.inference.bundle import export_bundle

    exp, feats, km = trained["exp"], str(trained["feats"]), trained["km"]
    config = load_yaml(exp / "config.yaml")
    assert config["kmeans_sha256"] and config["feature_specs"][0]["feature"] == "mfcc"
    decode(str(exp), feats, str(tmp_path / "dec"), trained["text"], "hard", device="cpu")
    export_bundle(str(exp), str(tmp_path / "bundle"))
    run_learn_kmeans(feats, 4, "sklearn", str(km), n_init=1, seed=7)  # k-means re-learned to the recorded path
    message = rf"{km}: not the codebook {exp / 'config.yaml'} was trained with \(sha256"
    with pytest.raises(CodebookChanged, match=message):
        decode(str(exp), feats, str(tmp_path / "dec2"), trained["text"], "hard", device="cpu")
    with pytest.raises(CodebookChanged, match=message):
        export_bundle(str(exp), str(tmp_path / "bundle2"))
    with pytest.raises(CodebookChanged, match="not the codebook"):  # what voc synthesize builds its head with
        inference_head({**config, "head": "hard"}, None, None, where=str(exp / "config.yaml"))
    assert not (tmp_path / "dec2").exists() and not (tmp_path / "bundle2").exists()
    import softtok  # the bundle holds its own checked copy: it still loads and decodes
    assert softtok.load(tmp_path / "bundle", device="cpu").codebooks[0].meta["sha256"] == config["kmeans_sha256"]

    del config["kmeans_sha256"]  # a config of an older softtok: warned once, trusted
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    with caplog.at_level(logging.WARNING):
        decode(str(exp), feats, str(tmp_path / "dec3"), trained["text"], "hard", device="cpu")
        decode(str(exp), feats, str(tmp_path / "dec4"), trained["text"], "hard", device="cpu")
    assert caplog.text.count("records no codebook sha256") == 1


def test_export_refuses_redumped_training_features(tmp_path, tone_dir, trained):
    from softtok.inference.bundle import BundleError, export_bundle

    dump_features(str(tone_dir), "mfcc", str(trained["feats"].parent), cmn=True)  # same path, other features
    with pytest.raises(BundleError, match=r"feats.yaml: not the features the model was trained on \(cmn False → True"):
        export_bundle(str(trained["exp"]), str(tmp_path / "bundle"))


def test_training_does_not_resume_onto_another_codebook(tmp_path, trained):
    from softtok.downstream.asr.train import train

    run_learn_kmeans(str(trained["feats"]), 4, "sklearn", str(trained["km"]), n_init=1, seed=3)
    with pytest.raises(ValueError, match=r"config.yaml: its checkpoints were trained on other inputs than this "
                                         r"run's \(the codebooks' content"):
        train(str(tmp_path / "asr.yaml"), str(trained["feats"]), trained["text"], str(trained["feats"]),
              trained["text"], str(trained["exp"]), "hard", str(trained["km"]), overrides={"max_epoch": 2},
              device="cpu")
    assert os.path.isfile(trained["exp"] / "model.pth")
