"""Data-parallel training helpers: batch sharding, single-process no-ops, one DDP step (2 gloo ranks) = one step, and a
one-rank group made by the caller taking the DDP path."""

from __future__ import annotations

import os
import socket
from typing import Dict, List

import pytest
import torch
import yaml
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import REPO
from softtok.downstream import distributed
from softtok.downstream.asr.model import TokenASR
from softtok.downstream.training import EpochCheckpoints, log_to_file, optimizer_step
from softtok.downstream.vocoder import hifigan
from softtok.downstream.vocoder.mel import MelVocoder
from softtok.tokenizers.heads import TokenInput

NO_DROPOUT = {"dropout_rate": 0.0, "positional_dropout_rate": 0.0, "attention_dropout_rate": 0.0}
SPLIT = [slice(0, 2), slice(2, 3)]  # uneven on purpose: rank 0 gets 2 utterances, rank 1 gets 1


def tiny_asr(ctc_weight: float = 0.3) -> TokenASR:
    """A tiny E-Branchformer ASR (as conf/train_smoke.yaml) with dropout and input masking off: a deterministic step."""
    torch.manual_seed(0)
    return TokenASR(vocab_size=7, n_tokens=5, embed_dim=16, encoder="e_branchformer", ctc_weight=ctc_weight,
                    encoder_conf={"output_size": 16, "attention_heads": 2, "linear_units": 32, "cgmlp_linear_units": 32,
                                  "num_blocks": 1, "input_layer": "conv1d2", "cgmlp_conv_kernel": 7,
                                  "merge_conv_kernel": 7, **NO_DROPOUT},
                    decoder_conf={"attention_heads": 2, "linear_units": 32, "num_blocks": 1, "dropout_rate": 0.0,
                                  "positional_dropout_rate": 0.0, "self_attention_dropout_rate": 0.0,
                                  "src_attention_dropout_rate": 0.0},
                    masking_conf={"num_time_masks": 0, "num_channel_masks": 0})


def tiny_batch(rows: slice = slice(None)):
    """Three utterances of equal length (no input padding: a split changes no frame), targets of 5, 3 and 4."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 5, (3, 24), generator=g)
    y_lens = torch.tensor([5, 3, 4])
    ys = torch.randint(2, 6, (3, 5), generator=g)
    ys[1, 3:] = -1
    ys[2, 4:] = -1
    ys, y_lens = ys[rows], y_lens[rows]
    return TokenInput("ids", ids=ids[rows][..., None]), torch.full((len(y_lens),), 24), ys[:, :int(y_lens.max())], y_lens


def sgd_step(model: torch.nn.Module, loss: torch.Tensor, n: int, scaled: bool = True) -> None:
    """One SGD step (lr 1: parameter change = gradient) on a loss averaged over ``n`` items."""
    if scaled:
        loss = distributed.scale_loss(loss, n)
    optimizer_step(model, torch.optim.SGD(model.parameters(), lr=1.0), loss, grad_clip=1e9)


def asr_step(model: torch.nn.Module, rows: slice = slice(None), scaled: bool = True) -> None:
    """One SGD step of the ASR loss (a mean over utterances) on the given utterances of the tiny batch."""
    tokens, lengths, ys, y_lens = tiny_batch(rows)
    loss, _ = model(tokens, lengths, ys, y_lens)
    sgd_step(model, loss, len(lengths), scaled)


def mel_step(model: torch.nn.Module, rows: slice = slice(None)) -> None:
    """One SGD step of the mel-vocoder loss (a mean over frames) on utterances of 12, 7 and 9 tokens (padded)."""
    g = torch.Generator().manual_seed(2)
    ids, lengths = torch.randint(0, 5, (3, 12), generator=g)[rows], torch.tensor([12, 7, 9])[rows]
    target = torch.randn(3, 24, 8, generator=g)[rows, :2 * int(lengths.max())]
    mel, mel_lengths = model(TokenInput("ids", ids=ids[:, :int(lengths.max()), None]), lengths)
    loss, _ = distributed.unwrap(model).loss(mel, mel_lengths, target, 2 * lengths)
    sgd_step(model, loss, int((2 * lengths).sum()))


def tiny_mel() -> MelVocoder:
    torch.manual_seed(0)
    return MelVocoder(n_tokens=5, embed_dim=8, channels=8, n_layers=1, n_post_layers=1, kernel=3, n_mels=8,
                      dropout=0.0)


def tiny_gan():
    """The CPU smoke config's generator (K=5), discriminator and losses, seeded."""
    conf = yaml.safe_load((REPO / "egs" / "piper_joe" / "voc" / "conf" / "hifigan_smoke.yaml").read_text())
    torch.manual_seed(0)
    gen, disc = hifigan.UnitHiFiGAN(n_tokens=5, **conf["model"]), hifigan.build_discriminator(conf)
    return gen, disc, hifigan.GANLosses(conf["mel_loss"], 45.0, 2.0, 1.0)


def gan_step(gen: torch.nn.Module, disc: torch.nn.Module, losses: torch.nn.Module, rows: slice = slice(None)) -> None:
    """One HiFi-GAN step (D, then G through D; SGD lr 0.01) on the given crops of three 16-frame crops."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 5, (3, 16), generator=g)[rows]
    y = 0.3 * torch.randn(3, 1, 16 * hifigan.HOP, generator=g)[rows]
    opts = [torch.optim.SGD(m.parameters(), lr=0.01) for m in (gen, disc)]
    hifigan._train_step(gen, disc, losses, *opts, TokenInput("ids", ids=ids[..., None]), y, grad_clip=1e9)


def _state(*models: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(models) for k, v in m.state_dict().items()}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    """One gloo rank: DDP steps on this rank's share of the batch, scaled and not; rank 0 saves the parameters."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with distributed.session("cpu") as device:
        assert device == "cpu" and distributed.world_size() == world and dist.get_backend() == "gloo"
        results = {}
        for scaled in (True, False):
            model = tiny_asr()
            asr_step(distributed.wrap(model, device), SPLIT[rank], scaled)
            results[scaled] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        unused = tiny_asr(ctc_weight=0.0)  # the CTC layer gets no gradient: DDP must still step, twice
        net = distributed.wrap(unused, device)
        for _ in range(2):
            asr_step(net, SPLIT[rank])
        mel = tiny_mel()
        mel_step(distributed.wrap(mel, device), SPLIT[rank])
        results["mel"] = mel.state_dict()
        gen, disc, losses = tiny_gan()
        gan_step(distributed.wrap(gen, device), distributed.wrap(disc, device), losses, SPLIT[rank])
        results["gan"] = _state(gen, disc)
        states: List[object] = [None] * world
        dist.all_gather_object(states, results["gan"])
        results["gan_ranks_agree"] = all(torch.equal(v, states[1][k]) for k, v in states[0].items())
        results["stats"] = distributed.sum_stats({"loss": 2.0 * (rank + 1)} if rank == 0 else {}, 2.0 + rank)
        results["shard"] = distributed.shard(list("abcde"))
        gathered: List[object] = [None] * world
        dist.all_gather_object(gathered, results["shard"])
        results["shards"] = gathered
        if rank == 0:
            torch.save(results, out)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Dict:
    """What the two gloo ranks computed (spawned once for the module)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path_factory.mktemp("ddp") / "rank0.pt"
    mp.spawn(_worker, args=(2, port, str(out)), nprocs=2, join=True)
    return torch.load(out, weights_only=False)


def test_ddp_step_on_split_batch_equals_one_step_on_whole_batch(two_ranks):
    model = tiny_asr()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    asr_step(model)
    moved = max(float((model.state_dict()[k] - before[k]).abs().max()) for k in before)
    diff = max(float((two_ranks[True][k] - v).abs().max()) for k, v in model.state_dict().items())
    plain = max(float((two_ranks[False][k] - v).abs().max()) for k, v in model.state_dict().items())
    assert moved > 1e-2  # the step did something
    assert diff < 1e-5, f"DDP step differs from the single-process step by {diff}"
    assert plain > 100 * max(diff, 1e-6), "without scale_loss an uneven split should give another step"


def test_ddp_mel_vocoder_step_weights_frames(two_ranks):
    model = tiny_mel()
    mel_step(model)
    diff = max(float((two_ranks["mel"][k] - v).abs().max()) for k, v in model.state_dict().items())
    assert diff < 1e-5, f"DDP mel-vocoder step differs from the single-process step by {diff}"


def _norm(tensors) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))


def test_ddp_hifigan_step_equals_one_step_on_whole_batch(two_ranks):
    """D's and G's gradients are each reduced once, over the uneven split rescaled to the whole batch."""
    gen, disc, losses = tiny_gan()
    before = _state(gen, disc)
    gan_step(gen, disc, losses)
    after = _state(gen, disc)
    for part in ("0.", "1."):  # the generator and the discriminator both moved, and as on the whole batch
        keys = [k for k in after if k.startswith(part) and after[k].is_floating_point()]
        moved = _norm(after[k] - before[k] for k in keys)
        rel = _norm(two_ranks["gan"][k] - after[k] for k in keys) / moved
        assert moved > 1e-2 and rel < 1e-5, (part, moved, rel)  # measured: G 1.2e-6, D 3e-8 (D 4e-5 unrescaled)
    assert two_ranks["gan_ranks_agree"]


def test_gan_step_gives_each_parameter_one_gradient():
    """The generator step runs through the frozen discriminator: no D gradient (nor DDP reduction) in G's backward."""
    gen, disc, losses = tiny_gan()
    calls = {id(p): 0 for p in [*gen.parameters(), *disc.parameters()]}
    for p in [*gen.parameters(), *disc.parameters()]:
        p.register_hook(lambda g, key=id(p): calls.__setitem__(key, calls[key] + 1))
    gan_step(gen, disc, losses)
    assert set(calls.values()) == {1}
    assert all(p.requires_grad for p in disc.parameters())  # unfrozen again


def test_ddp_sums_stats_and_shards_batches(two_ranks):
    totals, n = two_ranks["stats"]
    assert totals == {"loss": 2.0} and n == 5.0  # rank 1 had no batch and no keys
    assert two_ranks["shards"] == [["a", "c"], ["b", "d"]]  # "e" dropped: equal step counts


def test_shard_is_disjoint_and_equal_with_the_remainder_dropped(monkeypatch):
    groups = [[f"u{i}"] for i in range(11)]
    shares = {}
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    for r in range(4):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        shares[r] = distributed.shard(groups)
        assert distributed.shard(groups, drop_remainder=False) == groups[r::4]
    assert {len(s) for s in shares.values()} == {2}
    flat = [g[0] for s in shares.values() for g in s]
    assert len(set(flat)) == 8 and set(flat) <= {g[0] for g in groups[:8]}
    with pytest.raises(ValueError, match="3 training batches for 4 ranks"):
        distributed.shard(groups[:3])


@pytest.mark.parametrize("world", [None, "1"])
def test_single_process_has_no_group_and_changes_nothing(monkeypatch, world):
    if world is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world)
    loss = torch.tensor(2.5)
    with distributed.session("cpu") as device:
        assert device == "cpu" and not dist.is_initialized() and distributed.is_main()
        assert distributed.scale_loss(loss, 3) is loss
        assert distributed.sum_stats({"a": 1.0}, 2) == ({"a": 1.0}, 2)
        assert distributed.shard([[1], [2], [3]]) == [[1], [2], [3]]
        model = torch.nn.Linear(2, 2)
        assert distributed.wrap(model, device) is model
        state = torch.get_rng_state()
        distributed.seed_rank(0, 3)
        assert torch.equal(state, torch.get_rng_state())


def _one_rank(rank: int, port: int, out: str) -> None:
    """A one-rank gloo group made here, without WORLD_SIZE (as bench/gpu_check.py makes nccl's): one wrapped step."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=1)
    with distributed.session("cpu") as device:
        model = tiny_asr()
        net = distributed.wrap(model, device)
        asr_step(net)
        result = {"ddp": isinstance(net, torch.nn.parallel.DistributedDataParallel), "state": model.state_dict(),
                  "stats": distributed.sum_stats({"a": 1.0}, 2)}
    result["left_open"] = dist.is_initialized()
    dist.destroy_process_group()
    torch.save(result, out)


def test_a_one_rank_group_made_by_the_caller_takes_the_ddp_path(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_one_rank, args=(port, str(tmp_path / "one.pt")), nprocs=1, join=True)
    got = torch.load(tmp_path / "one.pt", weights_only=False)
    assert got["ddp"] and got["left_open"] and got["stats"] == ({"a": 1.0}, 2)
    model = tiny_asr()
    asr_step(model)
    assert max(float((got["state"][k] - v).abs().max()) for k, v in model.state_dict().items()) < 1e-6


def test_bad_world_size_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be a positive integer"):
        with distributed.session("cpu"):
            pass


def test_only_rank_zero_writes_checkpoints_and_logs(monkeypatch, tmp_path):
    """A non-zero rank keeps the history (for the summary) but writes no file."""
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    model = torch.nn.Linear(2, 2)
    checkpoints = EpochCheckpoints(tmp_path, model, torch.optim.SGD(model.parameters(), lr=0.1))
    with log_to_file(tmp_path / "train.log"):
        checkpoints.save({"epoch": 1, "valid_loss": 1.0})
    assert checkpoints.history == [{"epoch": 1, "valid_loss": 1.0}]
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    checkpoints.save({"epoch": 2, "valid_loss": 0.5})
    assert checkpoints.finish(keep_nbest=1)["averaged"] == [2]
    assert {p.name for p in tmp_path.rglob("*.pth")} == {"epoch2.pth", "model.pth"}
