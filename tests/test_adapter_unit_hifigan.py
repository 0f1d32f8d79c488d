"""Unit HiFi-GANs of other toolkits (``softtok import-model code_hifigan | pwg_hifigan``) soft-decoded as saved.

Neither fairseq nor parallel_wavegan installs beside the pinned set, so each checkpoint is written here with its
toolkit's key names, shapes and file layout, small sizes and random weights of unit scale:
- ``code_hifigan``: speech-resynthesis (models.py ``CodeGenerator``, commit 94d5e2d) and fairseq ≥ 0.12
  (``fairseq/models/text_to_speech/codehifigan.py``): a torch file ``{"generator": state dict}``, layers weight-normed
  as ``torch.nn.utils.weight_norm`` names them (``weight_g``, ``weight_v``), the config JSON of
  configs/LJSpeech/hubert100_lut.json with GSLM's upsampling (rates 5,4,4,2,2, kernels 11,8,8,4,4);
- ``pwg_hifigan``: ParallelWaveGAN 0.6.x ``DiscreteSymbolHiFiGANGenerator`` (parallel_wavegan/models/hifigan.py):
  ``checkpoint-<N>steps.pkl`` = ``{"model": {"generator", "discriminator"}, "optimizer", "scheduler", "steps",
  "epochs"}`` and the ``config.yml`` of egs/vctk/hubert_voc1/conf/hifigan_hubert_24k.v1.yaml (24 kHz, 4 speakers).
The toolkit's own hard output is computed here as those toolkits compute it: espnet2's HiFi-GAN generator (same
layers and activations as both) with each upsampling stage the toolkit's ``ConvTranspose1d(k, u, padding=(k-u)//2)``,
run on the unit table's rows of the hard ids (plus the speaker row PWG adds).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from espnet2.gan_tts.hifigan import HiFiGANGenerator
from torch import nn

import softtok
from conftest import SPEECHOCEAN, make_speechocean_subset, needs_whisper
from softtok.adapters import AdapterError, adapter
from softtok.cli import main
from softtok.inference.bundle import read_bundle
from softtok.inference.imports import build_parser
from softtok.inference.inputs import collect_inputs
from softtok.tokenizers.datadir import read_kaldi_map
from softtok.tokenizers.dump_features import dump_features
from softtok.tokenizers.jobs import run_learn_kmeans
from softtok.tokenizers.kmeans import Codebook

K, EMBED, FEAT_DIM = 16, 8, 384  # units, unit-embedding dim, whisper tiny.en features
GSLM_CONFIG: Dict[str, Any] = {  # speech-resynthesis configs/LJSpeech/hubert100_lut.json, small, units only
    "resblock": "1", "upsample_rates": [5, 4, 4, 2, 2], "upsample_kernel_sizes": [11, 8, 8, 4, 4],
    "upsample_initial_channel": 64, "resblock_kernel_sizes": [3, 5], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
    "num_embeddings": K, "embedding_dim": EMBED, "model_in_dim": EMBED, "segment_size": 8960, "code_hop_size": 320,
    "f0": False, "num_mels": 80, "sampling_rate": 16000, "fmin": 0, "fmax": 8000,
}
PWG_PARAMS: Dict[str, Any] = {  # hifigan_hubert_24k.v1.yaml's generator_params, small
    "in_channels": EMBED, "out_channels": 1, "channels": 64, "num_embs": K, "num_spk_embs": 4, "spk_emb_dim": EMBED,
    "concat_spk_emb": False, "kernel_size": 7, "upsample_scales": [12, 10, 2, 2],
    "upsample_kernel_sizes": [24, 20, 4, 4], "resblock_kernel_sizes": [3, 5], "resblock_dilations": [[1, 3, 5]] * 2,
    "use_additional_convs": True, "bias": True, "nonlinear_activation": "LeakyReLU",
    "nonlinear_activation_params": {"negative_slope": 0.1}, "use_weight_norm": True,
}
DURATION = {"dur_prediction_weight": 1.0, "dur_predictor_params": {"encoder_embed_dim": EMBED, "var_pred_hidden_dim":
            EMBED, "var_pred_kernel_size": 3, "var_pred_dropout": 0.5}}


# ----------------------------------------------------------------------------------------------- the toolkits' models


def toolkit_generator(in_dim: int, channels: int, scales: List[int], kernels: List[int], block_kernels: List[int],
                      dilations: List[List[int]], resblock2: bool = False, seed: int = 0) -> nn.Module:
    """The toolkits' HiFi-GAN V1 generator on espnet2's layers, their upsampling convolutions, random weights."""
    gen = HiFiGANGenerator(in_channels=in_dim, out_channels=1, channels=channels, upsample_scales=scales,
                           upsample_kernel_sizes=[2 * u for u in scales], resblock_kernel_sizes=block_kernels,
                           resblock_dilations=dilations, use_additional_convs=not resblock2, use_weight_norm=False)
    for stage, (u, k) in enumerate(zip(scales, kernels)):
        c_in, c_out = channels // 2 ** stage, channels // 2 ** (stage + 1)
        gen.upsamples[stage][1] = nn.ConvTranspose1d(c_in, c_out, k, u, padding=(k - u) // 2)
    rng = torch.Generator().manual_seed(seed)
    for name, p in gen.named_parameters():
        module = gen.get_submodule(name.rsplit(".", 1)[0])
        if name.endswith("bias"):
            p.data = 0.1 * torch.randn(p.shape, generator=rng)
        else:  # unit-scale activations: 1/√fan-in
            transposed = isinstance(module, nn.ConvTranspose1d)
            fan = p.shape[0] * p.shape[2] / module.stride[0] if transposed else p.shape[1] * p.shape[2]
            p.data = torch.randn(p.shape, generator=rng) / math.sqrt(fan)
    return gen.eval()


def weight_normed(state: Dict[str, torch.Tensor], seed: int = 1) -> Dict[str, torch.Tensor]:
    """Each conv weight W as torch's weight norm stores it: v = W·s (s > 0 per dim-0 slice), g = ‖W‖ per slice."""
    rng = torch.Generator().manual_seed(seed)
    out = {}
    for key, w in state.items():
        if key.endswith(".weight") and w.ndim == 3:
            base = key[:-len("weight")]
            out[base + "weight_g"] = w.flatten(1).norm(dim=1).reshape(-1, 1, 1)
            out[base + "weight_v"] = w * (0.5 + torch.rand(w.shape[0], 1, 1, generator=rng))
        else:
            out[key] = w
    return out


FAIRSEQ_NAMES = [(r"^input_conv\.", "conv_pre."), (r"^upsamples\.(\d+)\.1\.", r"ups.\1."),
                 (r"^blocks\.(\d+)\.convs1\.(\d+)\.1\.", r"resblocks.\1.convs1.\2."),
                 (r"^blocks\.(\d+)\.convs2\.(\d+)\.1\.", r"resblocks.\1.convs2.\2."),
                 (r"^output_conv\.1\.", "conv_post.")]


def fairseq_key(key: str, resblock2: bool) -> str:
    for pattern, name in FAIRSEQ_NAMES:
        key = re.sub(pattern, name, key)
    return key.replace(".convs1.", ".convs.") if resblock2 else key


def code_generator_keys(config: Dict[str, Any]) -> set:
    """The state-dict keys of speech-resynthesis / fairseq ``CodeGenerator(config)`` with weight norm (from its
    __init__: conv_pre, ups[i], resblocks[i·n + j] with convs1/convs2 of 3 layers, conv_post, dict)."""
    n_stages, n_blocks = len(config["upsample_rates"]), len(config["resblock_kernel_sizes"])
    convs = [f"resblocks.{b}.convs{c}.{j}" for b in range(n_stages * n_blocks) for c in (1, 2) for j in range(3)]
    layers = ["conv_pre", *[f"ups.{i}" for i in range(n_stages)], *convs, "conv_post"]
    return {"dict.weight"} | {f"{m}.{s}" for m in layers for s in ("weight_g", "weight_v", "bias")}


def write_code_hifigan(folder: Path, config: Dict[str, Any], seed: int = 0, weight_norm: bool = True,
                       extra: Dict[str, torch.Tensor] | None = None) -> Dict[str, Any]:
    """A CodeHiFiGAN checkpoint + config.json; returns the unit table and the generator that computes its output."""
    resblock2 = config["resblock"] == "2"
    dilations = [d[:2] for d in config["resblock_dilation_sizes"]] if resblock2 else config["resblock_dilation_sizes"]
    gen = toolkit_generator(config["embedding_dim"], config["upsample_initial_channel"], config["upsample_rates"],
                            config["upsample_kernel_sizes"], config["resblock_kernel_sizes"], dilations, resblock2,
                            seed)
    rng = torch.Generator().manual_seed(seed)
    table = torch.randn(config["num_embeddings"], config["embedding_dim"], generator=rng)
    state = {fairseq_key(k, resblock2): v for k, v in gen.state_dict().items()}
    state = {**(weight_normed(state) if weight_norm else state), "dict.weight": table, **(extra or {})}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"generator": state}, folder / "g_00000100")
    (folder / "config.json").write_text(json.dumps(config, indent=4))
    return {"generator": gen, "table": table, "checkpoint": folder / "g_00000100", "config": folder / "config.json",
            "keys": set(state)}


def write_pwg(folder: Path, params: Dict[str, Any], sampling_rate: int = 24000, seed: int = 0,
              generator_type: str = "DiscreteSymbolHiFiGANGenerator",
              extra: Dict[str, torch.Tensor] | None = None) -> Dict[str, Any]:
    """A parallel-wavegan-train checkpoint-100steps.pkl + config.yml; the unit and speaker tables and the generator.
    A DiscreteSymbolDurationGenerator's table has num_embs + 1 rows (its padding id)."""
    gen = toolkit_generator(params["in_channels"], params["channels"], params["upsample_scales"],
                            params["upsample_kernel_sizes"], params["resblock_kernel_sizes"],
                            params["resblock_dilations"], seed=seed)
    rng = torch.Generator().manual_seed(seed)
    rows = params["num_embs"] + (generator_type == "DiscreteSymbolDurationGenerator")
    table = torch.randn(rows, params["in_channels"], generator=rng)
    speakers = torch.randn(max(params["num_spk_embs"], 1), params["spk_emb_dim"], generator=rng)
    state = {**weight_normed(gen.state_dict()), "emb.weight": table, **(extra or {})}
    if params["num_spk_embs"] > 0:
        state["spk_emb.weight"] = speakers
    disc = {"msd.discriminators.0.layers.0.0.weight": torch.zeros(4, 1, 15)}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"generator": state, "discriminator": disc}, "optimizer": {"generator": {}, "discriminator":
                {}}, "scheduler": {"generator": {}, "discriminator": {}}, "steps": 100, "epochs": 1},
               folder / "checkpoint-100steps.pkl")
    config = {"sampling_rate": sampling_rate, "hop_size": math.prod(params["upsample_scales"]), "num_mels": 2,
              "format": "hdf5", "generator_type": generator_type, "generator_params": params,
              "discriminator_type": "HiFiGANMultiScaleMultiPeriodDiscriminator", "batch_max_steps": 9600,
              "version": "0.6.1"}
    (folder / "config.yml").write_text(yaml.safe_dump(config))
    return {"generator": gen, "table": table, "speakers": speakers, "checkpoint": folder / "checkpoint-100steps.pkl",
            "config": folder / "config.yml", "keys": set(state)}


def toolkit_output(written: Dict[str, Any], ids: torch.Tensor, speaker: int | None = None) -> np.ndarray:
    """The toolkit's hard output: its generator on its unit table's rows of ``ids`` (+ PWG's added speaker row)."""
    x = written["table"][ids]
    if speaker is not None:
        x = x + written["speakers"][speaker]
    with torch.no_grad():
        return written["generator"](x.T[None]).reshape(-1).numpy()


# ----------------------------------------------------------------------------------------------- refusals (no audio)


def collect(fmt: str, written: Dict[str, Any], kmeans: Path, *extra: str):
    args = build_parser().parse_args([fmt, "--generator", str(written["checkpoint"]), "--config",
                                      str(written["config"]), "--kmeans", str(kmeans), "--out-dir", "unused", *extra])
    return adapter(fmt).collect(args)


def refusal(fmt: str, written: Dict[str, Any], kmeans: Path, *extra: str) -> str:
    with pytest.raises(AdapterError) as err:
        collect(fmt, written, kmeans, *extra)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.fixture
def random_kmeans(tmp_path) -> Path:
    path = tmp_path / "km.npy"
    np.save(path, np.random.default_rng(0).standard_normal((K, FEAT_DIM)).astype(np.float32))
    return path


def test_written_checkpoints_have_the_toolkits_key_names(tmp_path):
    assert write_code_hifigan(tmp_path / "c", GSLM_CONFIG)["keys"] == code_generator_keys(GSLM_CONFIG)
    keys = write_pwg(tmp_path / "p", PWG_PARAMS)["keys"]
    assert {"emb.weight", "spk_emb.weight", "input_conv.weight_g", "upsamples.3.1.weight_v", "output_conv.1.bias",
            "blocks.7.convs2.2.1.weight_g"} <= keys and len(keys) == 2 + 3 * (1 + 4 + 4 * 2 * 2 * 3 + 1)


@pytest.mark.parametrize("change, named", [
    ({"f0": True}, "f0 = true"), ({"multispkr": "single"}, "multispkr"), ({"embedder_params": {"a": 1}},
                                                                           "embedder_params"),
    (DURATION, "dur_predictor_params = {"), ({"model_in_dim": EMBED + 128}, "model_in_dim = 136"),
    ({"upsample_kernel_sizes": [9, 8, 8, 4, 4]}, "'ups.0.weight' has shape (64, 32, 11)"),
    ({"num_embeddings": K + 4}, "'dict.weight' has shape (16, 8), the config says (20, 8)"),
    ({"resblock": "3"}, "resblock = '3'"),
])
def test_code_hifigan_refusals_name_the_config_key(tmp_path, random_kmeans, change, named):
    written = write_code_hifigan(tmp_path, GSLM_CONFIG)
    written["config"].write_text(json.dumps({**GSLM_CONFIG, **change}))
    assert named in refusal("code_hifigan", written, random_kmeans)


@pytest.mark.parametrize("edit, named", [
    (lambda s: s.pop("conv_post.bias"), "missing key 'conv_post.bias'"),
    (lambda s: s.pop("resblocks.3.convs2.1.weight_v"), "missing key 'resblocks.3.convs2.1.weight_v'"),
    (lambda s: s.pop("ups.2.weight_g"), "missing key 'ups.2.weight_g' (the pair of 'ups.2.weight_v')"),
    (lambda s: s.update({"spkr.weight": torch.zeros(200, EMBED)}), "unexpected key 'spkr.weight'"),
    (lambda s: s.update({"dur_predictor.proj.weight": torch.zeros(1, EMBED)}), "unexpected key 'dur_predictor.proj"),
])
def test_code_hifigan_refuses_missing_and_unknown_keys(tmp_path, random_kmeans, edit, named):
    written = write_code_hifigan(tmp_path, GSLM_CONFIG)
    checkpoint = torch.load(written["checkpoint"], weights_only=True)
    edit(checkpoint["generator"])
    torch.save(checkpoint, written["checkpoint"])
    assert named in refusal("code_hifigan", written, random_kmeans)


def test_codebook_size_and_unsafe_pickles_are_refused(tmp_path, random_kmeans):
    written = write_code_hifigan(tmp_path, GSLM_CONFIG)
    np.save(tmp_path / "km12.npy", np.zeros((12, FEAT_DIM), np.float32))
    assert "num_embeddings=16 units but the codebook" in refusal("code_hifigan", written, tmp_path / "km12.npy")
    torch.save({"generator": {"dict.weight": torch.zeros(K, EMBED)}, "args": argparse.Namespace()},
               written["checkpoint"])
    assert "does not unpickle" in refusal("code_hifigan", written, random_kmeans)


@pytest.mark.parametrize("change, extra, named", [
    ({}, [], "num_spk_embs = 4: a multi-speaker vocoder; give --speaker ID in 0 … 3"),
    ({}, ["--speaker", "4"], "give --speaker ID in 0 … 3"),
    ({"concat_spk_emb": True}, ["--speaker", "0"], "generator_params.concat_spk_emb = true"),
    ({"out_channels": 4}, ["--speaker", "0"], "generator_params.out_channels = 4"),
    ({"num_spk_embs": 0}, ["--speaker", "0"], "a single-speaker vocoder takes no --speaker"),
    ({"use_causal_conv": True}, ["--speaker", "0"], "generator_params.use_causal_conv is not an option"),
    ({"num_embs": 20}, ["--speaker", "0"], "generator_params.num_embs=20 units but the codebook"),
])
def test_pwg_refusals_name_the_config_key(tmp_path, random_kmeans, change, extra, named):
    written = write_pwg(tmp_path, {**PWG_PARAMS, **change})
    assert named in refusal("pwg_hifigan", written, random_kmeans, *extra)


@pytest.mark.parametrize("generator_type, named", [
    ("DiscreteSymbolDurationGenerator", "generator_type = DiscreteSymbolDurationGenerator: the vocoder has a "
                                        "duration predictor"),
    ("ParallelWaveGANGenerator", "generator_type = ParallelWaveGANGenerator, not a discrete-symbol HiFi-GAN"),
])
def test_pwg_refuses_other_generators(tmp_path, random_kmeans, generator_type, named):
    written = write_pwg(tmp_path, PWG_PARAMS, generator_type=generator_type)
    assert named in refusal("pwg_hifigan", written, random_kmeans, "--speaker", "0")


def test_pwg_duration_generator_with_the_opt_in(tmp_path, random_kmeans):
    """Its generator runs on frame-rate units: the predictor is left out, units are rows 0 … K − 1 (row K pads)."""
    params = {**PWG_PARAMS, "num_spk_embs": 0, "duration_chans": 8}
    predictor = {"duration_predictor.conv.0.0.weight": torch.zeros(8, EMBED, 3),
                 "duration_predictor.linear.weight": torch.zeros(1, 8)}
    written = write_pwg(tmp_path, params, generator_type="DiscreteSymbolDurationGenerator", extra=predictor)
    imported = collect("pwg_hifigan", written, random_kmeans, "--drop-duration-predictor")
    state = torch.load(imported.files["generator.pth"], weights_only=True)
    assert torch.equal(state["embedding.tables.0.weight"], written["table"][:K])
    for key, value in written["generator"].state_dict().items():
        assert torch.allclose(state[f"generator.{key}"], value, atol=1e-6), key
    assert imported.model["generator_type"] == "DiscreteSymbolDurationGenerator"


# ----------------------------------------------------------------------------------------------- real speech


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Whisper features of 4 speechocean762 utterances and their K=16 k-means."""
    if not SPEECHOCEAN.is_dir():
        pytest.skip(f"{SPEECHOCEAN} not present")
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("unit_hifigan")
    data = make_speechocean_subset(root / "data", 4)
    feats = dump_features(str(data), "whisper", str(root / "dump"))["output"]
    run_learn_kmeans(feats, K, "faiss", str(root / "km.npy"))
    items = collect_inputs([str(data)])
    return {"root": root, "data": data, "feats": feats, "kmeans": root / "km.npy", "items": items,
            "wave": items[0].read()}


def import_model(fmt: str, written: Dict[str, Any], speech: Dict[str, Any], out: Path, *extra: str) -> int:
    return main(["import-model", fmt, "--generator", str(written["checkpoint"]), "--config", str(written["config"]),
                 "--kmeans", str(speech["kmeans"]), "--feats", speech["feats"], "--scale-feats", speech["feats"],
                 "--out-dir", str(out), *extra])


def check_soft_decoding(model, written: Dict[str, Any], speech: Dict[str, Any], speaker: int | None = None) -> None:
    """Hard and τ → 0 give the toolkit's hard output (1e-5); soft at the τ scale changes it; top-k K = dense."""
    wave = speech["wave"]
    ids = Codebook.load(speech["kmeans"]).assign(torch.from_numpy(model.features(wave, 16000))).long()
    reference = toolkit_output(written, ids, speaker)
    assert np.abs(reference).max() > 0.2 and len(reference) == len(ids) * written["hop"]
    hard = model.resynthesize([wave], 16000, head="hard")[0]
    cold = model.resynthesize([wave], 16000, head="soft", tau=1e-12)[0]
    assert np.abs(hard - reference).max() < 1e-5 and np.abs(cold - reference).max() < 1e-5
    soft = model.resynthesize([wave], 16000, head="soft", tau_factor=1.0)[0]
    assert np.abs(soft - reference).mean() > 1e-2
    top_all = model.resynthesize([wave], 16000, head="soft", tau_factor=1.0, top_k=K)[0]
    assert np.abs(top_all - soft).max() < 1e-5


@needs_whisper
def test_code_hifigan_end_to_end_through_the_cli(speech, tmp_path):
    written = {**write_code_hifigan(tmp_path / "gslm", GSLM_CONFIG), "hop": 320}
    bundle = tmp_path / "bundle"
    assert import_model("code_hifigan", written, speech, bundle) == 0
    spec = read_bundle(bundle).spec
    assert spec["kind"] == "vocoder" and spec["model"]["format"] == "code_hifigan"
    assert (spec["model"]["n_units"], spec["model"]["unit_offset"], spec["model"]["sample_rate"]) == (K, 0, 16000)
    assert spec["model"]["generator"]["upsample_kernel_sizes"] == [11, 8, 8, 4, 4]
    items = speech["items"][:2]
    assert main(["resynthesize", str(bundle), *[i.source for i in items], "--head", "soft", "--tau-factor", "1",
                 "--device", "cpu", "--out-dir", str(tmp_path / "out")]) == 0
    wav_scp = read_kaldi_map(tmp_path / "out" / "wav.scp")
    for item in items:
        info = sf.info(wav_scp[Path(item.source).stem])
        assert info.samplerate == 16000 and abs(info.frames - len(item.read())) < 2 * 320
    check_soft_decoding(softtok.load(bundle, device="cpu"), written, speech)


@needs_whisper
def test_code_hifigan_variants_duration_predictor_resblock2_plain_weights(speech, tmp_path):
    """A duration model (opt-in: its generator still runs on frame-rate units), ResBlock2, weight norm removed."""
    config = {**GSLM_CONFIG, **DURATION, "resblock": "2", "resblock_dilation_sizes": [[1, 3], [1, 3]]}
    dur = {"dur_predictor.conv1.0.weight": torch.zeros(EMBED, EMBED, 3), "dur_predictor.proj.weight":
           torch.zeros(1, EMBED)}
    written = {**write_code_hifigan(tmp_path / "dur", config, seed=3, weight_norm=False, extra=dur), "hop": 320}
    assert import_model("code_hifigan", written, speech, tmp_path / "b") == 1  # refused without the opt-in
    assert import_model("code_hifigan", written, speech, tmp_path / "b", "--drop-duration-predictor") == 0
    check_soft_decoding(softtok.load(tmp_path / "b", device="cpu"), written, speech)


@needs_whisper
def test_pwg_hifigan_24k_speaker_end_to_end(speech, tmp_path):
    written = {**write_pwg(tmp_path / "pwg", PWG_PARAMS), "hop": 480}
    bundle = tmp_path / "bundle"
    assert import_model("pwg_hifigan", written, speech, bundle, "--speaker", "2") == 0
    spec = read_bundle(bundle).spec["model"]
    assert (spec["format"], spec["sample_rate"], spec["speaker"], spec["unit_offset"]) == ("pwg_hifigan", 24000, 2, 0)
    item = speech["items"][0]
    assert main(["resynthesize", str(bundle), item.source, "--device", "cpu", "--out-dir", str(tmp_path / "out")]) == 0
    info = sf.info(read_kaldi_map(tmp_path / "out" / "wav.scp")[Path(item.source).stem])
    assert info.samplerate == 24000 and abs(info.frames / 24000 - len(item.read()) / 16000) < 2 * 0.02
    check_soft_decoding(softtok.load(bundle, device="cpu"), written, speech, speaker=2)


@needs_whisper
def test_a_vocoder_of_another_unit_rate_is_refused(speech, tmp_path):
    """24 kHz with hop 320 is 75 units/s; whisper's features are 50 frames/s."""
    written = write_pwg(tmp_path / "pwg75", {**PWG_PARAMS, "upsample_scales": [10, 8, 2, 2],
                                             "upsample_kernel_sizes": [20, 16, 4, 4]})
    assert import_model("pwg_hifigan", written, speech, tmp_path / "b", "--speaker", "0") == 1
    assert not (tmp_path / "b").exists()
