"""Label-free τ (``tau: auto``): f* × the median nearest squared distance of the input itself, over the set decoded
or each utterance; exact against hand-computed medians, equal to decoding with the τ it measures, bad input refused
in one line."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from softtok.downstream.data import ArrayFeatures, TokenData
from softtok.tokenizers.heads import add_head_args, build_head, head_conf_of, run_dir_name
from softtok.tokenizers.kmeans import Codebook
from softtok.tokenizers.tau import AutoTau, DegenerateTau, tau_of

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
