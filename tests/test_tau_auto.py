"""Label-free τ (``tau: auto``): f* × the median nearest squared distance of the input itself, over the set decoded
or each utterance; exact against hand-computed medians, equal to decoding with the τ it measures, bad input refused
in one line."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from softtok.downstream.asr.data import TokenASRData
from softtok.downstream.asr.decode import TokenASRInference, decode
from softtok.downstream.asr.train import train
from softtok.downstream.data import ArrayFeatures, TokenData
from softtok.recipes.asr import ASR_RULE, collect_results, decode_sets, results_markdown
from softtok.tokenizers.fileio import ArkScpWriter, load_yaml, save_yaml
from softtok.tokenizers.heads import add_head_args, build_head, head_conf_of, run_dir_name
from softtok.tokenizers.jobs import run_learn_kmeans
from softtok.tokenizers.kmeans import Codebook
from softtok.tokenizers.streams import nearest_sqdist
from softtok.tokenizers.tau import AutoTau, DegenerateTau, TauSweep, tau_of, tau_scales
from test_multi_stream_asr import TINY_CONF

# every frame below (x ≥ 0) is nearest to the origin, so its squared distance is ‖x‖², and scaling an utterance ×3
# scales all of them ×9; the other centre is close enough that the probabilities are far from one-hot at these τ
CODEBOOK = Codebook(np.array([[0.0, 0.0], [-4.0, 0.0]], dtype=np.float32))
UTT = torch.tensor([[1.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # squared distances 1, 4, 8: median 4
LOUD = 3 * UTT  # 9, 36, 72: median 36


def auto_head(scope: str, factor: float = 4.0, codebook=CODEBOOK, **conf):
    return build_head("soft", codebook, tau="auto", tau_factor=factor, tau_scope=scope, **conf)


def test_utterance_tau_is_the_factor_times_its_own_median():
    """τ = 4 × 4 for UTT and 4 × 36 = 9 × that for LOUD; the probabilities are the explicit τ's exactly."""
    head = auto_head("utterance")
    for x, tau in ((UTT, 16.0), (LOUD, 144.0)):
        assert torch.equal(head(x).probs, build_head("soft", CODEBOOK, tau=tau)(x).probs)
        d2 = torch.tensor([[((row - c) ** 2).sum() for c in torch.from_numpy(CODEBOOK.centroids)] for row in x])
        by_hand = torch.softmax(-(d2 - d2.min(1, keepdim=True).values) / tau, dim=1)
        assert torch.allclose(head(x).probs[:, 0], by_hand, atol=1e-6) and by_hand.min() > 0.05
    assert not torch.equal(head(UTT).probs, build_head("soft", CODEBOOK, tau=17.0)(UTT).probs)
    even = torch.tensor([[1.0, 0.0], [0.0, 2.0], [2.0, 2.0], [0.0, 3.0]])  # 1, 4, 8, 9: the lower middle value, 4
    assert torch.equal(head(even).probs, build_head("soft", CODEBOOK, tau=16.0)(even).probs)
    one = torch.tensor([[0.0, 3.0]])  # one frame: its own distance, 9
    assert torch.equal(head(one).probs, build_head("soft", CODEBOOK, tau=36.0)(one).probs)


def test_set_scope_takes_one_median_over_every_frame_of_the_set():
    """Over UTT and LOUD together (1, 4, 8, 9, 36, 72) the median is 8: τ = 32 for both, unlike per utterance."""
    per_set, per_utt = auto_head("set"), auto_head("utterance")
    assert per_set.fit_set([UTT, LOUD]) == [32.0] and per_set.taus == [32.0]
    fixed = build_head("soft", CODEBOOK, tau=32.0)
    for x in (UTT, LOUD):
        assert torch.equal(per_set(x).probs, fixed(x).probs)
    assert not torch.equal(per_set(LOUD).probs, per_utt(LOUD).probs)
    assert per_set.settings() == "soft_tauauto-set-f4" and per_utt.settings() == "soft_tauauto-utterance-f4"
    assert run_dir_name("decode", "soft", AutoTau(0.1, "set"), search="greedy") == "decode_soft_tauauto-set-f0.1_greedy"
    assert AutoTau(0.1, "utterance").conf() == {"tau": "auto", "tau_factor": 0.1, "tau_scope": "utterance"}


def test_several_sources_and_channels_each_take_their_own_median():
    """Two sources: τ per source from its own frames; a per-channel (dMel) codebook: the median over frames and
    channels, as the dev scale. Top-k gives the explicit τ's top-k."""
    column = Codebook(np.array([[0.0], [-4.0]], dtype=np.float32))  # second source: one column
    x = torch.cat([UTT, torch.tensor([[1.0], [3.0], [5.0]])], dim=1)  # 1, 9, 25: median 9
    two = build_head("soft", [CODEBOOK, column], tau="auto", tau_factor=4.0, tau_scope="utterance")
    assert torch.equal(two(x).probs, build_head("soft", [CODEBOOK, column], tau=[16.0, 36.0])(x).probs)
    assert not torch.equal(two(x).probs, build_head("soft", [CODEBOOK, column], tau=[16.0, 16.0])(x).probs)
    channels = Codebook(np.array([[0.0, 0.0], [-4.0, -4.0]], dtype=np.float32), {"per_channel": True})
    bins = auto_head("utterance", codebook=channels)  # |x_c − 0|²: 1, 0, 4 and 0, 4, 4 -> median 1
    assert torch.equal(bins(UTT).probs, build_head("soft", channels, tau=4.0)(UTT).probs)
    top = auto_head("utterance", top_k=2)
    assert torch.equal(top(LOUD).weights, build_head("soft", CODEBOOK, tau=144.0, top_k=2)(LOUD).weights)


def test_no_frames_or_a_zero_median_is_a_one_line_error_naming_the_utterance():
    """Refused, not floored: τ = f × 0 would be the hard head under a soft name."""
    on_centres = torch.tensor([[0.0, 0.0], [-4.0, 0.0], [1.0, 0.0]])  # 0, 0, 1: median 0
    for x, message in ((torch.zeros(0, 2), "no frames"), (on_centres, "median nearest squared distance is 0")):
        with pytest.raises(DegenerateTau, match=message):
            auto_head("utterance")(x)
    data = TokenData(ArrayFeatures({"u1": UTT.numpy(), "silent": on_centres.numpy()}, [2]))
    assert data.tokens(["u1"], auto_head("utterance"))[0].probs.shape == (1, 3, 1, 2)
    with pytest.raises(DegenerateTau, match="utterance 'silent': tau auto: the median .* is 0") as err:
        data.tokens(["u1", "silent"], auto_head("utterance"))
    assert "\n" not in str(err.value)
    with pytest.raises(DegenerateTau, match="no frames"):
        auto_head("set").fit_set([])


@pytest.mark.parametrize("conf, message", [
    ({"tau": "auto"}, "tau auto needs tau_factor"),
    ({"tau": 2.0, "tau_factor": 0.1}, "tau_factor and tau_scope go with tau: auto"),
    ({"tau": 2.0, "tau_scope": "set"}, "tau_factor and tau_scope go with tau: auto"),
    ({"tau": "auto", "tau_factor": 0.1, "tau_scope": "corpus"}, "tau scope 'corpus'"),
    ({"tau": "auto", "tau_factor": 0}, "tau factor must be a finite number > 0"),
    ({"tau": "auto", "tau_factor": True}, "tau factor must be a finite number > 0"),
    ({"tau": "automatic"}, "tau must be a finite number > 0"),
])
def test_bad_auto_options(conf, message):
    with pytest.raises(ValueError, match=message):
        build_head("soft", CODEBOOK, **conf)


def test_set_scope_must_be_measured_first():
    with pytest.raises(ValueError, match="tau auto over the set is measured on the whole set first"):
        auto_head("set")(UTT)
    with pytest.raises(ValueError, match="only tau auto over the set is fitted"):
        auto_head("utterance").fit_set([UTT])


def test_the_cli_takes_tau_auto_with_scope_and_factor(capsys):
    p = argparse.ArgumentParser()
    add_head_args(p, auto_tau=True)
    args = p.parse_args(["--head", "soft", "--tau", "auto", "--tau-scope", "utterance", "--tau-factor", "0.2"])
    assert head_conf_of(args) == {"tau": "auto", "tau_scope": "utterance", "tau_factor": 0.2}
    assert head_conf_of(p.parse_args(["--tau", "2"])) == {"tau": 2.0}
    with pytest.raises(SystemExit):
        p.parse_args(["--tau", "often"])
    assert "neither a number nor 'auto'" in capsys.readouterr().err
    fixed_only = argparse.ArgumentParser()
    add_head_args(fixed_only)
    with pytest.raises(SystemExit):
        fixed_only.parse_args(["--tau", "auto"])


def test_rounding_follows_the_dev_scale():
    """τ is rounded as the sweep rounds τ* (4 significant digits), so the set scope on dev reproduces τ*."""
    x = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 2.0]])  # 2, 1, 5: median 2
    head = auto_head("set", factor=1 / 3)
    assert head.fit_set([x]) == [tau_of(1 / 3, 2.0)] == [0.6667]


# ---------------------------------------------------------------- decoding and the recipe


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """A tiny recipe tree: dev and 'loud' (dev's features ×3) sets, a K = 8 hard-token model with a dev sweep whose
    τ* = 0.5 × dev's median (f* = 0.5), and a continuous model."""
    root = tmp_path_factory.mktemp("tau_auto")
    gen = np.random.default_rng(0)
    mats = {f"utt{i:02d}": gen.normal(size=(30 + 7 * i, 6)).astype(np.float32) for i in range(10)}
    dev = write_set(root, "dev", mats)
    write_set(root, "loud", {utt: 3 * mat for utt, mat in mats.items()})
    run_learn_kmeans(dev, 8, "faiss", str(root / "km.npy"))
    (root / "conf.yaml").write_text(yaml.safe_dump(TINY_CONF))
    text = str(root / "data" / "dev" / "text")
    args = (str(root / "conf.yaml"), dev, text, dev, text)
    train(*args, str(root / "exp" / "asr_hard_k8"), "hard", str(root / "km.npy"), device="cpu")
    train(*args, str(root / "exp" / "asr_continuous"), "continuous", device="cpu")
    scale = tau_scales([Codebook.load(root / "km.npy")], [dev])[0]
    rows = [{"factor": f, "tau": tau_of(f, scale), "wer": wer, "cer": 50.0, "seconds": 1.0}
            for f, wer in ((0.5, 80.0), (2.0, 95.0))]
    TauSweep("dev", scale, {"wer": 90.0, "cer": 50.0}, rows, ASR_RULE).save(root / "exp" / "asr_hard_k8")
    return root, dev, tau_of(0.5, scale)


def write_set(root: Path, name: str, mats: dict) -> str:
    """root/dump/<name>/feats.scp (+ feats.yaml) and root/data/<name>/text, as decode-sets reads them."""
    out = root / "dump" / name
    with ArkScpWriter(out / "feats.ark", out / "feats.scp") as writer:
        for utt, mat in mats.items():
            writer.write(utt, mat)
    save_yaml(out / "feats.yaml", {"feature": "hubert", "dim": 6, "layer": 1, "checkpoint": "m"})
    (root / "data" / name).mkdir(parents=True)
    text = "".join(f"{utt} {'AB BA' if i % 2 else 'BA'}\n" for i, utt in enumerate(mats))
    (root / "data" / name / "text").write_text(text)
    return str(out / "feats.scp")


def encoded(inference: TokenASRInference, data: TokenASRData, utt: str) -> torch.Tensor:
    return inference._encode(data, [utt])[1]


def test_set_scope_decoding_is_decoding_at_the_tau_it_measures(recipe, tmp_path):
    """On dev, the set's median is the sweep's scale: tau auto (default factor f* = 0.5) gives τ* itself, and the
    same hypotheses and encoder output as decoding at τ*."""
    root, dev, tau_star = recipe
    exp, text = str(root / "exp" / "asr_hard_k8"), str(root / "data" / "dev" / "text")
    auto = decode(exp, dev, str(tmp_path / "auto"), text, "soft", {"tau": "auto"}, device="cpu")
    fixed = decode(exp, dev, str(tmp_path / "fixed"), text, "soft", {"tau": tau_star}, device="cpu")
    record = load_yaml(tmp_path / "auto" / "decode.yaml")
    assert record["head_conf"] == {"tau": "auto", "tau_factor": 0.5}
    assert record["auto_tau"] == {"factor": 0.5, "scope": "set", "tau": tau_star}
    assert record["settings"] == "soft_tauauto-set-f0.5" and auto["wer"] == fixed["wer"]
    assert (tmp_path / "auto" / "hyp").read_text() == (tmp_path / "fixed" / "hyp").read_text()
    data = TokenASRData(dev)
    measured = TokenASRInference(exp, "soft", {"tau": "auto"})
    measured.fit_tau(data)
    for utt in data.utts[:3]:
        assert torch.equal(encoded(measured, data, utt), encoded(TokenASRInference(exp, "soft", {"tau": tau_star}),
                                                                 data, utt))


def test_utterance_scope_decoding_is_decoding_each_utterance_at_its_own_tau(recipe):
    """Each utterance's encoder output equals the explicit τ = f × its own median's, and differs from τ ×2's."""
    root, dev, _ = recipe
    exp = str(root / "exp" / "asr_hard_k8")
    codebook, data = Codebook.load(root / "km.npy"), TokenASRData(dev)
    auto = TokenASRInference(exp, "soft", {"tau": "auto", "tau_scope": "utterance", "tau_factor": 0.25})
    assert not auto.fused  # one τ per utterance: the two-step path
    for utt in data.utts[::4]:
        own = tau_of(0.25, float(nearest_sqdist(codebook, torch.from_numpy(data.feats[utt])).median()))
        explicit = [TokenASRInference(exp, "soft", {"tau": t}, fused=False) for t in (own, 2 * own)]
        assert torch.equal(encoded(auto, data, utt), encoded(explicit[0], data, utt))
        assert not torch.equal(encoded(auto, data, utt), encoded(explicit[1], data, utt))


def test_decode_refuses_what_auto_cannot_measure(recipe, tmp_path):
    root, dev, _ = recipe
    exp, text = root / "exp" / "asr_hard_k8", str(root / "data" / "dev" / "text")
    no_gain = tmp_path / "no_gain"
    shutil.copytree(exp, no_gain)
    sweep = load_yaml(no_gain / "tau_sweep.yaml")
    TauSweep("dev", sweep["median_sqdist"], {"wer": 10.0, "cer": 5.0}, sweep["sweep"], ASR_RULE).save(no_gain)
    with pytest.raises(ValueError, match="tau_sweep.yaml: no τ beat hard on dev, so there is no f\\* for tau auto"):
        decode(str(no_gain), dev, str(tmp_path / "x"), text, "soft", {"tau": "auto"}, device="cpu")
    centres = tmp_path / "centres"  # every frame a centroid: the set's median is 0
    with ArkScpWriter(centres / "feats.ark", centres / "feats.scp") as writer:
        writer.write("utt00", np.repeat(Codebook.load(root / "km.npy").centroids, 2, axis=0))
    with pytest.raises(DegenerateTau, match=f"{centres}/feats.scp: tau auto: the median nearest squared distance is 0"):
        decode(str(exp), str(centres / "feats.scp"), str(tmp_path / "x"), None, "soft", {"tau": "auto"}, device="cpu")


def test_decode_sets_and_results_compare_auto_with_tau_star(recipe):
    """decode-sets adds both automatic heads; results.json gets them, auto − τ* intervals (0 on dev, where the set τ
    is τ*) and the share of the hard → continuous gap; RESULTS.md shows both sections, and only with their data."""
    root, _, tau_star = recipe
    for model in ("asr_hard_k8", "asr_continuous"):
        decode_sets(str(root / "exp" / model), str(root / "dump"), str(root / "data"), ["dev", "loud"])
    assert (root / "exp" / "asr_hard_k8" / "decode_soft_tauauto-utterance-f0.5_greedy" / "loud" / "hyp").is_file()
    results = collect_results(str(root / "exp"), [8], ["dev", "loud"], {})
    dev, loud = results["K"]["8"]["dev"], results["K"]["8"]["loud"]
    assert dev["soft_auto_set"]["tau"] == tau_star != loud["soft_auto_set"]["tau"]
    assert dev["soft_auto_set"]["wer"] == dev["soft"]["wer"] and dev["soft_auto_set_vs_soft"]["delta"] == 0.0
    assert dev["soft_auto_utterance"]["tau"] is None and "soft_auto_utterance_vs_soft" in loud
    share = loud["soft_gap_share"]
    assert share["n_utts"] == 10 and share["gap"] == pytest.approx(loud["hard"]["wer"] - loud["continuous"]["wer"],
                                                                   abs=0.01)
    md = results_markdown(results, "")
    assert "Label-free τ: soft (τ*) keeps the τ chosen on dev" in md and "(f* = 0.5, dev's)" in md
    assert f"| dev | {dev['soft']['wer']:.2f} | {dev['soft_auto_set']['wer']:.2f} |" in md
    assert "auto (utt) − τ*: interval below 0 (auto better) on" in md and "hard − continuous WER" in md
    assert "rounded WERs" not in md  # every share here has its bootstrap
    for entry in (dev, loud):
        for key in [k for k in entry if "auto" in k]:
            del entry[key]
    assert "Label-free τ" not in results_markdown(results, "")
