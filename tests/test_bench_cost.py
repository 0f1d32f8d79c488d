"""bench/full_scale_cost.py: FLOP counting against analytic counts, the extrapolation arithmetic, tiny real steps."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench" / "full_scale_cost.py"


@pytest.fixture(scope="module")
def cost():
    spec = importlib.util.spec_from_file_location("full_scale_cost", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_linear_flops_match_analytic(cost):
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(10, 64, requires_grad=True)
    assert cost.count_flops(lambda: lin(x)) == 2 * 10 * 64 * 32
    # backward: grad input and grad weight each cost the forward's matmul
    assert cost.count_flops(lambda: lin(x).sum().backward()) == 3 * 2 * 10 * 64 * 32


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_grouped_conv_backward_counted_once(cost, groups):
    """torch's own formula counts a grouped conv's weight gradient ``groups`` times; ours must not."""
    conv = torch.nn.Conv1d(16, 32, 5, groups=groups)
    x = torch.randn(2, 16, 100, requires_grad=True)
    forward = 2 * 2 * 96 * 32 * (16 // groups) * 5
    assert cost.count_flops(lambda: conv(x)) == forward
    assert cost.count_flops(lambda: conv(x).sum().backward()) == 3 * forward


def test_transposed_conv_backward(cost):
    conv = torch.nn.ConvTranspose1d(32, 16, 8, stride=4, groups=2)
    x = torch.randn(2, 32, 50, requires_grad=True)
    forward = 2 * 2 * 50 * 32 * 8 * 8
    assert cost.count_flops(lambda: conv(x).sum().backward()) == 3 * forward


def test_extrapolation_arithmetic(cost):
    assert cost.lloyd_flops(1000, 128, 1024) == 2 * 1000 * 128 * 1024
    assert cost.gpu_hours(3600e12, 100e12, 0.5) == pytest.approx(0.02)
    lo, hi = cost.gpu_range(cost.H100_PEAK["fp32"] * 3600, "fp32")
    assert (lo, hi) == (pytest.approx(1 / max(cost.UTILISATION)), pytest.approx(1 / min(cost.UTILISATION)))
    rate, lin = cost.seconds_per_unit([(100.0, 2.0), (200.0, 4.4)])
    assert rate == pytest.approx(6.4 / 300) and lin == pytest.approx(1.1)
    assert cost.asr_steps_per_epoch(28539, 635, 120000) == (188, math.ceil(28539 / 188))
    assert cost.hifigan_steps_per_epoch(12900, 8, 16) == 6450
    # learn_faiss's max_points_per_centroid never makes faiss subsample; faiss's default 256 would
    n = 5_431_000
    for k in (128, 1024, 4096):
        assert cost.faiss_points_used(n, k, cost.learn_faiss_max_ppc(n, k)) == n
    assert cost.faiss_points_used(n, 128, 256) == 32768
    assert cost.kmeanspp_flops(1024, 1024) == 2.0 * 1024 * (2 + 6) * 40 * 1024 * 1024


def test_tiny_measurements(cost):
    """The faiss, k-means++ and measure helpers run on tiny sizes and give positive, finite numbers."""
    cost.set_threads(1)
    km = cost.faiss_iteration(500, 8, 16, niter=2)()
    assert km.centroids.shape == (8, 16)
    t = cost.measure(cost.kmeanspp_call(8, 16), repeats=2, warmup=0)
    assert len(t["cpu_s"]) == 2 and t["cpu_s_median"] >= 0 and len(t["loadavg_1min"]) == 2
    res = cost.faiss_section([400, 800], [8], 16, niter=2, repeats=1)
    assert res["fits"]["8"]["s_per_nkd"] > 0 and len(res["rows"]) == 2


def test_tiny_hifigan_step_counts(cost, tmp_path):
    """A tiny HiFi-GAN config goes through the recipe's builder and _train_step; its FLOPs grow with the batch."""
    conf = tmp_path / "tiny.yaml"
    conf.write_text("batch_size: 2\nsegment_frames: 4\nsegments_per_utt: 1\nmax_epoch: 1\n"
                    "model: {embed_dim: 8, channels: 32, upsample_scales: [5, 4, 4, 2, 2], "
                    "upsample_kernel_sizes: [10, 8, 8, 4, 4], resblock_kernel_sizes: [3], "
                    "resblock_dilations: [[1]]}\n"
                    "discriminator: {scales: 1, periods: [2]}\n")
    parts = cost.build_hifigan(conf, n_tokens=8)
    one, two = (cost.count_flops(cost.hifigan_step(parts, b, 4)) for b in (1, 2))
    assert one > 0 and two == pytest.approx(2 * one, rel=0.05)


def test_remeasure_one_section_keeps_the_others(cost, tmp_path):
    """--render JSON --remeasure faiss: the faiss section is new, the rest is the committed run's, and both say so."""
    import json

    committed = json.loads((BENCH.parent / "full_scale_cost.json").read_text())
    run = tmp_path / "run.json"
    run.write_text(json.dumps(committed))
    with pytest.raises(SystemExit, match="--remeasure needs --render"):
        cost.main(["--remeasure", "faiss", "--out-dir", str(tmp_path)])
    assert cost.main(["--render", str(run), "--remeasure", "faiss", "--faiss-n", "5000", "6000", "--faiss-niter", "1",
                      "--repeats", "1", "--out-dir", str(tmp_path / "out")]) == 0
    new = json.loads((tmp_path / "out" / "full_scale_cost.json").read_text())
    assert new["hifigan"] == committed["hifigan"] and new["hubert"] == committed["hubert"]
    assert {row["N"] for row in new["faiss"]["rows"]} == {5000, 6000} != {row["N"] for row in committed["faiss"]["rows"]}
    assert new["remeasured"][-1]["sections"] == ["faiss"]
    assert "Measured again on" in (tmp_path / "out" / "FULL_SCALE_COST.md").read_text()
