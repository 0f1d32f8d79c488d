"""Bundles and soft inference from raw audio: export, softtok.load, transcribe / resynthesize on real speech, the
recipe decode's hypotheses from audio, long-audio windows, bad inputs and damaged bundles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import softtok
from conftest import SPEECHOCEAN, make_speechocean_subset, needs_whisper, write_wave
from softtok.cli import main
from softtok.downstream.asr.data import TokenASRData
from softtok.downstream.asr.decode import decode
from softtok.downstream.data import ArrayFeatures
from softtok.downstream.asr.train import train
from softtok.downstream.vocoder import train as voc_train
from softtok.inference.bundle import BundleError, export_bundle, read_bundle
from softtok.inference.inputs import collect_inputs
from softtok.inference.model import ASRModel, VocoderModel, split_windows
from softtok.recipes.asr import decode_dir, sweep_tau
from softtok.tokenizers.datadir import read_kaldi_map
from softtok.tokenizers.dump_features import dump_features
from softtok.tokenizers.jobs import run_learn_kmeans

pytestmark = [needs_whisper, pytest.mark.skipif(not SPEECHOCEAN.is_dir(), reason=f"{SPEECHOCEAN} not present")]

TINY_ASR = {"seed": 0, "max_epoch": 1, "batch_frames": 3000, "lr": 1e-5, "warmup_steps": 1, "keep_nbest": 1,
            "embed_init": "centroids", "num_threads": 1,
            "model": {"embed_dim": 16, "encoder": "conformer",
                      "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 16, "num_blocks": 1,
                                       "input_layer": "conv2d2"},
                      "decoder_conf": {"attention_heads": 2, "linear_units": 16, "num_blocks": 1}}}
TINY_MEL = {"seed": 0, "max_epoch": 1, "batch_frames": 2000, "lr": 1e-3, "num_threads": 1, "keep_nbest": 1,
            "model": {"embed_dim": 16, "channels": 16, "n_layers": 1, "n_post_layers": 1, "kernel": 3,
                      "dropout": 0.0}}


def streamed(path: Path) -> dict:
    """``key text`` lines in the order transcribe wrote them (as batches finished, not sorted)."""
    return dict((line.split(" ", 1) + [""])[:2] for line in path.read_text(encoding="utf-8").splitlines())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Whisper features of 8 train and 6 test speechocean762 utterances, K=8 k-means, a barely trained ASR model
    (lr 1e-5: near its random start, so its hypotheses are long and varied) with a τ sweep, a mel vocoder; bundles."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("inference")
    data = {"train": make_speechocean_subset(root / "data" / "train", 8),
            "test": make_speechocean_subset(root / "data" / "test", 6, split="test")}
    feats = {}
    for name, path in data.items():
        feats[name] = dump_features(str(path), "whisper", str(root / "dump" / name))["output"]
    run_learn_kmeans(feats["train"], 8, "faiss", str(root / "km8.npy"))
    (root / "asr.yaml").write_text(yaml.safe_dump(TINY_ASR))
    (root / "mel.yaml").write_text(yaml.safe_dump(TINY_MEL))
    text = {n: str(p / "text") for n, p in data.items()}
    train(str(root / "asr.yaml"), feats["train"], text["train"], feats["test"], text["test"], str(root / "asr"),
          "hard", str(root / "km8.npy"), device="cpu")
    sweep_tau(str(root / "asr"), feats["test"], text["test"], factors=[0.1, 1.0], set_name="test")
    voc_train.train(str(root / "mel.yaml"), feats["train"], str(data["train"]), str(root / "mel"), head="hard",
                    kmeans=str(root / "km8.npy"), device="cpu")
    export_bundle(str(root / "asr"), str(root / "b_asr"))
    export_bundle(str(root / "mel"), str(root / "b_mel"))
    return {"root": root, "data": data, "feats": feats, "text": text}


def test_bundle_records_what_inference_needs(trained):
    bundle = read_bundle(trained["root"] / "b_asr")
    spec = bundle.spec
    sweep = yaml.safe_load((trained["root"] / "asr" / "tau_sweep.yaml").read_text())
    assert spec["format"] == 1 and spec["kind"] == "asr" and spec["sources"][0]["name"] == "whisper"
    assert spec["sources"][0]["checkpoint"]["sha256"] and spec["sources"][0]["frame_rate"] == 50.0
    soft = {"name": "soft", "tau": sweep["best"]["tau"], "factor": sweep["best"]["factor"],
            "scale": sweep["median_sqdist"], "sweep": "tau_sweep.yaml", "sweep_set": "test"}
    fallback = {**soft, "name": "hard", "note": "no τ beat hard on dev"}
    assert spec["head"] == (soft if sweep["best"]["beats_hard"] else fallback)
    assert set(spec["files"]) == {"config.yaml", "model.pth", "codebooks/0.npy", "codebooks/0.yaml", "tau_sweep.yaml"}
    assert read_bundle(trained["root"] / "b_mel").kind == "vocoder"
    with pytest.raises(BundleError, match="already exists"):
        export_bundle(str(trained["root"] / "asr"), str(trained["root"] / "b_asr"))


@pytest.mark.parametrize("head", ["hard", "soft"])
def test_transcribe_a_data_dir_gives_the_recipe_decode_hypotheses(trained, tmp_path, head):
    """The CLI from audio and the recipe's decode stage from dumped features: the same hypotheses, byte for byte."""
    root, tau = trained["root"], read_bundle(trained["root"] / "b_asr").spec["head"]["tau"]
    recipe = tmp_path / decode_dir(head, tau if head == "soft" else None) / "test"
    decode(str(root / "asr"), trained["feats"]["test"], str(recipe), None, head,  # no --text: the raw hypotheses
           {"tau": tau} if head == "soft" else None, device="cpu")
    recipe = recipe / "hyp"
    out = tmp_path / "hyp"
    assert main(["transcribe", str(root / "b_asr"), str(trained["data"]["test"]), "--head", head, "--device", "cpu",
                 "--out", str(out)]) == 0
    mine, theirs = streamed(out), read_kaldi_map(recipe)
    assert mine == theirs and len(mine) == 6 and sum(len(t) for t in mine.values()) > 0


@pytest.mark.parametrize("factor", [0.1, 1.0, 10.0])
def test_fused_soft_decoding_gives_the_two_step_hypotheses(trained, factor):
    """Decoding embeds dense soft input in one fused call on CPU: the same hypotheses on real speech as the soft
    head then TokenEmbedding, with encoder outputs within float32 rounding (batches of unequal lengths)."""
    model = softtok.load(trained["root"] / "b_asr", device="cpu")
    feats = {i.key: model.features(i.read(), 16000, i.key) for i in collect_inputs([str(trained["data"]["test"])])}
    data = TokenASRData(ArrayFeatures(feats, model.source_dims))
    hyps, encoded = {}, {}
    for fused in (True, False):
        decoder = model.decoder(head="soft", tau_factor=factor, fused=fused)
        assert decoder.fused is fused
        groups = decoder.groups(data, batch_frames=1500)
        assert len({len(feats[u]) for u in groups[0]}) > 1
        hyps[fused] = {u: h for batch in decoder.stream(data, groups) for u, h in batch.items()}
        with torch.inference_mode():
            encoded[fused] = decoder._encode(data, groups[0])[1]
    assert hyps[True] == hyps[False] and sum(len(h) for h in hyps[True].values()) > 0
    assert (encoded[True] - encoded[False]).abs().max() <= 1e-4


def test_python_api_files_arrays_tokens_and_jsonl(trained, tmp_path, capsys):
    model = softtok.load(trained["root"] / "b_asr", device="cpu")
    assert isinstance(model, ASRModel)
    items = collect_inputs([str(trained["data"]["test"])])
    paths = [i.source for i in items[:2]]
    by_path = model.transcribe(paths, head="soft")
    wave, sr = sf.read(paths[0], dtype="float32")
    assert model.transcribe([wave], sample_rate=sr, head="soft")[0] == by_path[0]
    assert model.transcribe(paths, head="soft", tau_factor=read_bundle(trained["root"] / "b_asr").spec["head"]
                            ["factor"]) == by_path  # the bundle's τ scale × factor is τ*
    hard = model.tokens(wave, sr, head="hard")
    cold = model.tokens(wave, sr, head="soft", tau=1e-12)
    assert hard.ids.shape[1] == 1 and torch.equal(cold.probs.argmax(-1), hard.ids)
    assert main(["transcribe", str(trained["root"] / "b_asr"), *paths, "--format", "jsonl", "--tau", "3",
                 "--device", "cpu", "--ref", str(trained["data"]["test"] / "text")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["key"] for r in lines) == sorted(Path(p).stem for p in paths)  # a file's key is its name
    assert all(r["settings"] == "soft_tau3" and r["tau"] == 3.0 and r["search"] == "greedy" for r in lines)


def test_long_audio_is_cut_at_pauses_and_joined(trained, tmp_path):
    t = np.arange(16000 * 3) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    silence = np.zeros(8000, np.float32)
    wave = torch.from_numpy(np.concatenate([speech, silence, speech, silence, speech]))
    parts = split_windows(wave, max_frames=200)  # 4 s windows, cut where the pauses start
    assert [len(p) for p in parts] == [48000, 56000, 56000]
    assert all(float(p[:320].abs().max()) == 0.0 for p in parts[1:])
    model = softtok.load(trained["root"] / "b_asr", device="cpu")
    clip = collect_inputs([str(trained["data"]["test"])])[0].read()
    long = torch.cat([clip, torch.zeros(8000), clip])
    model.config["max_utt_frames"] = int(len(clip) / 320) + 40  # a clip and its pause fit a window, two do not
    windows = split_windows(long, model.max_frames)
    assert len(windows) == 2 and len(clip) <= len(windows[0]) <= len(clip) + 8000
    texts = model.transcribe(windows, sample_rate=16000)
    assert model.transcribe([long], sample_rate=16000)[0] == " ".join(t for t in texts if t)


def test_inputs_as_a_user_names_them(trained, tmp_path, monkeypatch):
    """Relative file and folder paths, a wav.scp with relative entries, and a folder of mixed formats."""
    source = Path(collect_inputs([str(trained["data"]["test"])])[0].source)
    wave, sr = sf.read(source, dtype="float32")
    write_wave(tmp_path / "clips" / "sub dir" / "a b.flac", wave, sr)
    write_wave(tmp_path / "clips" / "c.wav", wave[: sr], sr)
    (tmp_path / "clips" / "notes.txt").write_text("not audio, not picked up")
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "wav.scp").write_text("k1 ../clips/c.wav\n")
    monkeypatch.chdir(tmp_path)
    items = collect_inputs(["clips/c.wav", "list/wav.scp"])
    assert [i.key for i in items] == ["c", "k1"] and all(Path(i.source).is_file() for i in items)
    assert [i.key for i in collect_inputs(["clips"])] == ["c", "sub_dir/a_b"]
    model = softtok.load(trained["root"] / "b_asr", device="cpu")
    assert len(model.transcribe(["clips/c.wav", "clips/sub dir/a b.flac"])) == 2
    with pytest.raises(Exception, match="key 'c' comes twice"):
        collect_inputs(["clips/c.wav", "clips/c.wav"])


def test_bad_inputs_are_named_and_the_rest_transcribed(trained, tmp_path, caplog):
    good = collect_inputs([str(trained["data"]["test"])])[0].source
    (tmp_path / "notes.wav").write_text("not audio")
    write_wave(tmp_path / "empty.wav", np.zeros(0, np.float32))
    out = tmp_path / "hyp"
    code = main(["transcribe", str(trained["root"] / "b_asr"), good, str(tmp_path / "notes.wav"),
                 str(tmp_path / "empty.wav"), "--device", "cpu", "--out", str(out)])
    assert code == 1 and len(streamed(out)) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("notes" in e and "notes.wav" in e for e in errors) and any("empty.wav" in e for e in errors)
    assert all("\n" not in e for e in errors) and any("2 of 3 inputs failed" in e for e in errors)
    assert main(["transcribe", str(trained["root"] / "b_asr"), str(tmp_path / "nope.wav")]) == 1
    assert main(["transcribe", str(trained["root"] / "b_mel"), good, "--device", "cpu"]) == 1  # a vocoder bundle


def test_damaged_bundles_are_one_line_errors(trained, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(trained["root"] / "b_asr", bundle)
    (bundle / "codebooks" / "0.yaml").write_text((bundle / "codebooks" / "0.yaml").read_text() + "\n# edited\n")
    with pytest.raises(BundleError, match=r"codebooks/0.yaml: changed since export"):
        softtok.load(bundle)
    shutil.rmtree(bundle)
    shutil.copytree(trained["root"] / "b_asr", bundle)
    spec = yaml.safe_load((bundle / "softtok.yaml").read_text())
    (bundle / "model.pth").unlink()
    with pytest.raises(BundleError, match=r"model.pth: missing from the bundle"):
        softtok.load(bundle)
    shutil.copyfile(trained["root"] / "b_asr" / "model.pth", bundle / "model.pth")
    spec["sources"][0]["checkpoint"]["sha256"] = "0" * 64
    (bundle / "softtok.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(BundleError, match="featurizer checkpoint .* differs from the one the model was trained on"):
        softtok.load(bundle)
    spec["format"] = 2
    (bundle / "softtok.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(BundleError, match="format 2 is newer than this softtok reads"):
        softtok.load(bundle)
    with pytest.raises(BundleError, match="not a softtok bundle"):
        softtok.load(tmp_path)


def test_resynthesize_with_a_vocoder_bundle(trained, tmp_path):
    model = softtok.load(trained["root"] / "b_mel", device="cpu")
    assert isinstance(model, VocoderModel) and model.default_head == {"name": "hard"}
    items = collect_inputs([str(trained["data"]["test"])])[:2]
    assert main(["resynthesize", str(trained["root"] / "b_mel"), *[i.source for i in items], "--device", "cpu",
                 "--out-dir", str(tmp_path / "out")]) == 0
    wav_scp = read_kaldi_map(tmp_path / "out" / "wav.scp")
    assert len(wav_scp) == 2
    for item in items:
        info = sf.info(wav_scp[Path(item.source).stem])
        assert info.samplerate == 16000 and abs(info.frames - len(item.read())) < 2 * 320
    wave = items[0].read()
    hard = model.resynthesize([wave], 16000, head="hard")[0]
    cold = model.resynthesize([wave], 16000, head="soft", tau=1e-12)[0]
    assert np.array_equal(hard, cold)


def test_two_source_bundle_transcribes_as_the_recipe_decodes(trained, tmp_path):
    """Multi-stream bundles work alike: whisper layers 3 and 4 as two sources, one codebook each."""
    root = trained["root"]
    l3 = {name: dump_features(str(trained["data"][name]), "whisper", str(tmp_path / "l3" / name), layer=3)["output"]
          for name in ("train", "test")}
    run_learn_kmeans(l3["train"], 8, "faiss", str(tmp_path / "km_l3.npy"))
    two = {name: f"{l3[name]},{trained['feats'][name]}" for name in ("train", "test")}
    kmeans = f"{tmp_path / 'km_l3.npy'},{root / 'km8.npy'}"
    train(str(root / "asr.yaml"), two["train"], trained["text"]["train"], two["test"], trained["text"]["test"],
          str(tmp_path / "asr2"), "hard", kmeans, device="cpu")
    export_bundle(str(tmp_path / "asr2"), str(tmp_path / "b2"))
    spec = read_bundle(tmp_path / "b2").spec
    assert [s.get("layer") for s in spec["sources"]] == [3, None] and spec["head"] == {"name": "hard"}
    decode(str(tmp_path / "asr2"), two["test"], str(tmp_path / "recipe"), None, "soft", {"tau": [5.0, 50.0]},
           device="cpu")
    assert main(["transcribe", str(tmp_path / "b2"), str(trained["data"]["test"]), "--head", "soft",
                 "--device", "cpu", "--out", str(tmp_path / "hyp")]) == 1  # no τ* in a bundle without a sweep
    model = softtok.load(tmp_path / "b2", device="cpu")
    hyps = {}
    feats = {i.key: model.features(i.read(), 16000, i.key) for i in collect_inputs([str(trained["data"]["test"])])}
    for batch in model.decode_features(feats, head="soft", tau=[5.0, 50.0]):
        hyps.update(batch)
    assert hyps == read_kaldi_map(tmp_path / "recipe" / "hyp")


def test_bundle_default_head_is_hard_where_no_tau_beat_hard(tmp_path):
    """A sweep whose best τ did not beat hard on dev: the bundle defaults to hard and keeps the τ scale."""
    from softtok.inference.bundle import default_head

    sweep = {"set": "dev", "median_sqdist": 3.5, "hard": {"wer": 10.0, "cer": 5.0},
             "sweep": [{"factor": 0.1, "tau": 0.35, "wer": 10.5, "cer": 5.0}],
             "best": {"factor": 0.1, "tau": 0.35, "wer": 10.5, "cer": 5.0, "eligible": True, "beats_hard": False}}
    (tmp_path / "tau_sweep.yaml").write_text(yaml.safe_dump(sweep))
    head = default_head(tmp_path, {"n_tokens": 8})
    assert head["name"] == "hard" and head["scale"] == 3.5 and head["tau"] == 0.35  # --head soft: the best τ
    sweep["best"]["beats_hard"] = True
    (tmp_path / "tau_sweep.yaml").write_text(yaml.safe_dump(sweep))
    assert default_head(tmp_path, {"n_tokens": 8})["tau"] == 0.35
