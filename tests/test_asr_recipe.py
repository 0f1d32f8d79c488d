"""The speechocean762 ASR recipe in --smoke mode (every stage on tiny subsets) and the decoding switches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

from conftest import REPO, SHARED_DATA, absolute_paths, logged_commands, needs_shared, needs_whisper
from softtok.downstream.asr.decode import decode
from softtok.downstream.asr.model import CharTokenizer, TokenASR
from softtok.downstream.asr.train import train
from softtok.tokenizers.datadir import load_data_dir
from softtok.tokenizers.fileio import load_yaml
from softtok.tokenizers.heads import TokenInput
from softtok.tokenizers.tau import sweep_choice

RECIPE = REPO / "egs" / "speechocean762" / "asr" / "run.sh"


def smoke_argv(root: Path) -> List[str]:
    """The smoke recipe's command line into ``root``."""
    return [str(RECIPE), "--smoke", "true", "--data_root", str(SHARED_DATA), "--data", str(root / "data"),
            "--dump", str(root / "dump"), "--exp_dir", str(root / "exp"), "--results_dir", str(root),
            "--soft_train_factor", "0.05"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """Run the whole recipe once with --smoke true into a temporary folder."""
    if not SHARED_DATA.is_dir():
        pytest.skip("shared data not present")
    root = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(smoke_argv(root), capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def smoke_dmel(smoke) -> Path:
    """The recipe with --tokenizer dmel from stage 3 on the k-means run's data sets (stages 1-2 do not depend on the
    tokenizer): fbank features, dMel codebook, ASR on hard bins, τ sweep, decoding, results."""
    env = {**os.environ, "PYTHON": sys.executable}
    argv = [str(RECIPE), "--smoke", "true", "--tokenizer", "dmel", "--stage", "3", "--data", str(smoke / "data"),
            "--dump", str(smoke / "dump"), "--exp_dir", str(smoke / "exp_dmel"),
            "--results_dir", str(smoke / "results_dmel")]
    out = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return smoke


def check_dmel_smoke(root: Path) -> None:
    """What a dMel smoke run leaves: a (16, 80) bin codebook, an 80-stream model, hard/soft/continuous results."""
    codebook = load_yaml(root / "exp_dmel" / "kmeans" / "dmel_fbank_k16.yaml")
    assert codebook["kind"] == "dmel" and codebook["per_channel"] and (codebook["n_clusters"], codebook["dim"]) == (16, 80)
    config = load_yaml(root / "exp_dmel" / "asr_hard_k16" / "config.yaml")
    assert config["n_tokens"] == [16] * 80 and config["kmeans"].endswith("dmel_fbank_k16.npy")
    from softtok.inference.bundle import read_bundle

    bundle = read_bundle(root / "exp_dmel" / "bundles" / "asr_hard_k16")  # stage 13 runs for dMel too
    assert bundle.spec["sources"][0]["name"] == "fbank" and bundle.codebooks()[0].meta["per_channel"]
    results = json.loads((root / "results_dmel" / "results.json").read_text())
    assert list(results["K"]) == ["16"]
    for name in ("dev", "test", "test_noisy_0db", "fsdd", "fsdd_nonus"):
        entry = results["K"]["16"][name]
        assert set(entry) >= {"hard", "soft", "continuous", "soft_vs_hard"} and entry["hard"]["wer"] >= 0
        check_auto_tau_and_gap_share(name, entry)  # 80 per-channel streams: one median over frames and channels
    sweep = results["K"]["16"]["_tau_sweep"]
    tau = sweep["best"]["tau"]
    assert isinstance(tau, float) and tau > 0  # one τ for the 80 channels of one codebook
    soft = f"decode_soft_tau{tau:g}_greedy" if sweep_choice(sweep) is not None else "decode_hard_greedy"
    assert (root / "exp_dmel" / "asr_hard_k16" / soft / "fsdd" / "wer.txt").is_file()  # soft(τ*), or hard
    assert "learn-dmel" in (root / "results_dmel" / "RESULTS.md").read_text()


@needs_shared
@needs_whisper
def test_smoke_recipe_dmel(smoke_dmel):
    check_dmel_smoke(smoke_dmel)


@needs_shared
@needs_whisper
def test_smoke_recipe_exports_a_bundle_per_model(smoke):
    from softtok.inference.bundle import read_bundle

    for model in ("asr_hard_k16", "asr_hard_k32", "asr_soft_k16", "asr_continuous"):
        spec = read_bundle(smoke / "exp" / "bundles" / model).spec
        if model == "asr_continuous":
            assert spec["head"] == {"name": "continuous"} and "codebook" not in spec["sources"][0]
        else:
            sweep = load_yaml(smoke / "exp" / model / "tau_sweep.yaml")
            assert spec["head"]["tau"] == sweep["best"]["tau"]
            assert spec["head"]["name"] == ("soft" if sweep_choice(sweep) is not None else "hard")


@needs_shared
@needs_whisper
def test_smoke_recipe_results_layout(smoke):
    results = json.loads((smoke / "results.json").read_text())
    for k in ("16", "32"):
        per_k = results["K"][k]
        for name in ("dev", "test", "test_adults", "test_children", "test_noisy_10db", "test_noisy_0db",
                     "test_babblefsdd_10db", "test_babblefsdd_0db", "test_pink_10db", "test_pink_0db", "fsdd",
                     "fsdd_us", "fsdd_nonus"):
            entry = per_k[name]
            assert set(entry) >= {"hard", "soft", "continuous", "soft_trained", "soft_vs_hard", "soft_trained_vs_hard"}
            assert 0 <= entry["hard"]["wer"] and 0 <= entry["soft"]["cer"]
            assert entry["soft"]["tau"] == sweep_choice(per_k["_tau_sweep"])  # None: no τ beat hard, soft is hard
            ci = entry["soft_vs_hard"]
            assert ci["ci_low"] <= ci["delta"] <= ci["ci_high"] and ci["n_resamples"] >= 1000
            assert entry["soft_trained"]["tau"] == sweep_choice(per_k["_soft_trained"]["tau_sweep"])
            check_auto_tau_and_gap_share(name, entry)
    soft_config = load_yaml(smoke / "exp" / "asr_soft_k16" / "config.yaml")
    assert soft_config["head"] == "soft" and soft_config["tau_factor"] == 0.05
    assert soft_config["embed_init"] == "centroids"  # conf/train_smoke.yaml, as the CPU and GPU configs
    assert results["K"]["16"]["_soft_trained"]["train_tau"] == soft_config["head_conf"]["tau"] > 0
    training = results["training"]
    assert set(training) == {"asr_hard_k16", "asr_hard_k32", "asr_soft_k16", "asr_soft_k32", "asr_continuous"}
    assert training["asr_continuous"]["epochs"] == 2 and training["asr_continuous"]["train_seconds"] > 0
    sweep = load_yaml(smoke / "exp" / "asr_hard_k16" / "tau_sweep.yaml")
    assert sweep["set"] == "dev" and [r["factor"] for r in sweep["sweep"]] == [0.01, 0.05]
    tau = sweep_choice(sweep)
    soft = f"decode_soft_tau{tau:g}_greedy" if tau is not None else "decode_hard_greedy"
    assert (smoke / "exp" / "asr_hard_k16" / soft / "test" / "wer.txt").is_file()
    assert (smoke / "exp" / "asr_continuous" / "decode_continuous_greedy" / "fsdd" / "hyp").is_file()
    md = (smoke / "RESULTS.md").read_text()
    for text in ("## K = 32", "learn-kmeans", "speed-perturb", "soft/soft − hard", "## Training",
                 "Share of the hard → continuous gap that soft (τ*) recovers"):
        assert text in md, text
    assert (smoke / "tau_sweep.png").stat().st_size > 1000


def check_auto_tau_and_gap_share(name: str, entry: dict) -> None:
    """Label-free τ beside τ* where soft(τ*) is not hard: on dev (under the sweep's 200,000-frame sample) the set's τ
    is τ* itself, so the decodings agree exactly; the share of the hard → continuous gap with its bootstrap."""
    tau = entry["soft"]["tau"]
    if tau is not None:
        assert {f"soft_auto_{scope}{cmp}" for scope in ("set", "utterance") for cmp in ("", "_vs_soft")} <= set(entry)
        assert entry["soft_auto_utterance"]["tau"] is None and entry["soft_auto_set"]["tau"] > 0
        if name == "dev":
            assert entry["soft_auto_set"]["tau"] == tau and entry["soft_auto_set_vs_soft"]["delta"] == 0.0
    share = entry["soft_gap_share"]
    assert share["n_utts"] > 0 and share["gap"] == pytest.approx(entry["hard"]["wer"] - entry["continuous"]["wer"],
                                                                 abs=0.01)


@needs_shared
@needs_whisper
def test_smoke_recipe_noisy_sets(smoke):
    """Stage 2's noise: babble of training speakers, babble of FSDD speakers (none of test's), pink; 10 and 0 dB."""
    test, fsdd = (load_data_dir(smoke / "data" / name) for name in ("test", "fsdd"))
    for snr in (10, 0):
        kinds = {name: load_yaml(smoke / "data" / f"test_{name}_{snr}db" / "noise.yaml")
                 for name in ("noisy", "babblefsdd", "pink")}
        assert all(meta["snr_db"] == snr and meta["source"].endswith("/data/test") for meta in kinds.values())
        assert kinds["noisy"]["noise_source"].endswith("/data/train_nodev")
        babble = kinds["babblefsdd"]
        assert babble["noise"] == "babble" and babble["noise_source"].endswith("/data/fsdd")
        assert set(babble["noise_speakers"]) <= set(fsdd.utt2spk.values())
        assert not set(babble["noise_speakers"]) & set(test.utt2spk.values())
        assert kinds["pink"]["noise"] == "pink" and kinds["pink"]["noise_speakers"] is None


@needs_shared
@needs_whisper
def test_smoke_recipe_logs_commands_relative_to_the_recipe(smoke):
    """The command log (and RESULTS.md's Commands) keep no machine path: the smoke run's absolute --data, --dump,
    --exp_dir and --data_root are written relative to egs/speechocean762/asr; every stage is a softtok verb."""
    commands = (smoke / "exp" / "commands.txt").read_text()
    assert absolute_paths(commands) == [] and f" --out-dir {os.path.relpath(smoke, RECIPE.parent)}/" in commands
    calls = [line.split() for line in commands.splitlines() if not line.startswith("#")]
    assert all(call[:3] == [Path(sys.executable).name, "-m", "softtok.cli"] for call in calls), commands
    assert {" ".join(call[3:5]) for call in calls} >= {"subset-data --src", "sets split-speakers", "asr train",
                                                      "asr sweep-tau", "asr decode-sets", "asr decode"}
    assert absolute_paths(logged_commands(smoke / "RESULTS.md")) == []


@needs_shared
@needs_whisper
def test_smoke_recipe_analysis(smoke):
    """Stages 9-11: phone CTC model, frame phone labels of test, ANALYSIS.md over both K."""
    from softtok.tokenizers.datadir import read_kaldi_map
    from softtok.tokenizers.fileio import iter_scp

    res = json.loads((smoke / "analysis.json").read_text())
    assert [t["K"] for t in res["tokens"]] == [16, 32]
    assert res["tokens"][0]["tau"] == load_yaml(smoke / "exp" / "asr_hard_k16" / "tau_sweep.yaml")["best"]["tau"]
    assert all(0 <= t["purity"][h]["pnmi"] <= 1 for t in res["tokens"] for h in ("hard", "soft"))
    assert [r["head"] for r in res["continuous"]] == ["continuous (features)", "continuous (W x + b)"]
    align = smoke / "exp" / "align" / "test"
    meta = load_yaml(align / "align.yaml")
    assert meta["frame_rate"] == meta["align_frame_rate"] == 50.0 and meta["utts"] == res["utts"] == 24
    labels = read_kaldi_map(align / "phones.txt")
    utt, feats = next(iter_scp(smoke / "dump" / "whisper" / "test" / "feats.scp"))
    assert len(labels[utt].split()) == len(feats)  # one phone label per token frame
    assert load_yaml(smoke / "exp" / "phone_ctc" / "config.yaml")["token_type"] == "phone"
    assert (smoke / "exp" / "phone_ctc" / "decode_continuous_greedy" / "test" / "wer.txt").is_file()
    assert "## Tokens against phones" in (smoke / "ANALYSIS.md").read_text()
    assert (smoke / "purity.png").stat().st_size > 1000 and (smoke / "separability.png").stat().st_size > 1000


@needs_shared
@needs_whisper
def test_smoke_recipe_rankme_per_layer(smoke):
    """Stage 12: RankMe of each Whisper tiny.en layer on all of dev; layer 4 (PyTorch) is the dumped dev features'."""
    from softtok.analysis.metrics import GramStats
    from softtok.tokenizers.datadir import load_data_dir
    from softtok.tokenizers.fileio import iter_scp

    res = json.loads((smoke / "rankme.json").read_text())
    rows = res["rows"]
    assert [r["layer"] for r in rows] == [1, 2, 3, 4] and res["source"]["feature"] == "whisper"
    assert res["source"]["utts"] == len(load_data_dir(smoke / "data" / "dev").utt_ids)
    dumped = GramStats()
    for _, mat in iter_scp(smoke / "dump" / "whisper" / "dev" / "feats.scp"):  # stage 3, CTranslate2 encode()
        dumped.update(np.array(mat))
    assert all(r["frames"] == dumped.frames and 1 < r["rankme"] <= r["dim"] == 384 for r in rows)
    assert rows[-1]["rankme"] == pytest.approx(dumped.rankme(), rel=1e-3)
    assert len({round(r["rankme"], 1) for r in rows}) == 4  # each layer its own value
    md = (smoke / "RANKME.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    assert [r.split("|")[1].strip() for r in table] == ["1", "2", "3", "4"], md
    assert f"| {rows[0]['rankme']:.2f} |" in md and "final layer norm" in md
    assert "## Commands" in md and "analyze rankme --data-dir" in md and "--feature whisper --max-utts 0" in md
    assert (smoke / "rankme.png").stat().st_size > 1000


@needs_shared
@needs_whisper
def test_smoke_recipe_skips_done_stages(smoke):
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(smoke_argv(smoke), capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.count("done, skipping") == 13  # the same options: every stage done


@needs_shared
@needs_whisper
def test_decode_switches_on_trained_model(smoke, tmp_path):
    exp = smoke / "exp" / "asr_hard_k16"
    feats, text = smoke / "dump" / "whisper" / "dev" / "feats.scp", smoke / "data" / "dev" / "text"
    beam = decode(str(exp), str(feats), str(tmp_path / "beam"), str(text), "soft", {"tau": 3.0, "top_k": 4},
                  search="beam", beam_size=3)
    assert beam["utts"] > 0 and (tmp_path / "beam" / "hyp").is_file()
    assert load_yaml(tmp_path / "beam" / "decode.yaml")["settings"] == "soft_tau3_topk4"
    hard = decode(str(exp), str(feats), str(tmp_path / "hard"), str(text), "hard")
    tiny = decode(str(exp), str(feats), str(tmp_path / "tiny"), str(text), "soft", {"tau": 1e-12})
    assert (tmp_path / "hard" / "hyp").read_text() == (tmp_path / "tiny" / "hyp").read_text()  # τ→0 is hard
    assert hard["wer"] == tiny["wer"]
    with pytest.raises(ValueError, match="does not fit a discrete model"):
        decode(str(exp), str(feats), str(tmp_path / "x"), str(text), "continuous")
    with pytest.raises(ValueError, match="tau must be"):
        decode(str(exp), str(feats), str(tmp_path / "x"), str(text), "soft", {"tau": 0})


def test_model_accepts_three_input_forms_identically():
    torch.manual_seed(0)
    model = TokenASR(vocab_size=8, n_tokens=12, embed_dim=16, encoder_conf={
        "output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 1, "input_layer": "conv2d2"},
        decoder_conf={"attention_heads": 2, "linear_units": 32, "num_blocks": 1}).eval()
    ids = torch.randint(0, 12, (2, 30))
    lengths = torch.tensor([30, 25])
    forms = [TokenInput("ids", ids=ids[..., None]),
             TokenInput("probs", probs=torch.nn.functional.one_hot(ids, 12).float()[..., None, :]),
             TokenInput("topk", ids=ids[..., None, None], weights=torch.ones(2, 30, 1, 1))]
    encoded = [model.encode(f, lengths)[0] for f in forms]
    assert torch.allclose(encoded[0], encoded[1], atol=1e-5) and torch.allclose(encoded[0], encoded[2], atol=1e-5)


@pytest.mark.parametrize("head, kmeans, factor", [("hard", "k.npy", 0.02), ("soft", None, 0.02), ("soft", "k.npy", 0)])
def test_soft_training_tau_factor_needs_soft_head_and_codebook(tmp_path, head, kmeans, factor):
    with pytest.raises(ValueError, match="--tau-factor"):
        train("conf.yaml", "feats.scp", "text", "feats.scp", "text", str(tmp_path / "exp"), head, kmeans,
              tau_factor=factor)


def test_char_tokenizer_roundtrip():
    tok = CharTokenizer.from_texts(["HELLO WORLD", "IT'S"])
    assert tok.token_list[0] == "<blank>" and tok.token_list[-1] == "<sos/eos>"
    assert tok.decode(tok.encode("HELLO IT'S")) == "HELLO IT'S"
    assert tok.encode("Q") == [1]  # unknown character -> <unk>


def test_choose_tau_skips_degenerate_short_output():
    """A τ that lowers WER only by emptying hypotheses (CER up) is not chosen; the K=1024 failure of the first run."""
    from softtok.recipes.asr import choose_tau

    hard = {"wer": 109.36, "cer": 73.78}
    rows = [{"factor": 0.01, "tau": 2.0, "wer": 109.24, "cer": 73.65},
            {"factor": 0.1, "tau": 20.0, "wer": 108.87, "cer": 73.75},
            {"factor": 1.0, "tau": 199.4, "wer": 100.00, "cer": 86.83}]
    best = choose_tau(rows, hard)
    assert best["tau"] == 20.0 and best["eligible"]
    worse = [{"factor": 1.0, "tau": 199.4, "wer": 100.0, "cer": 86.83},
             {"factor": 0.5, "tau": 99.7, "wer": 101.0, "cer": 80.0}]
    fallback = choose_tau(worse, hard)
    assert fallback["tau"] == 99.7 and not fallback["eligible"]
    tie = [{"factor": 0.01, "tau": 2.0, "wer": 88.0, "cer": 57.5}, {"factor": 0.03, "tau": 6.0, "wer": 88.0, "cer": 57.1}]
    assert choose_tau(tie, {"wer": 88.3, "cer": 57.7})["tau"] == 6.0
    assert best["beats_hard"] and not fallback["beats_hard"]
    no_gain = choose_tau(tie, {"wer": 88.0, "cer": 57.7})  # eligible, but no lower WER than hard's
    assert no_gain["eligible"] and not no_gain["beats_hard"]


@pytest.mark.parametrize("taus", [[2.0, 20.0], [[2.0, 3.0], [20.0, 30.0]]])
def test_when_no_tau_beats_hard_soft_falls_back_to_hard(tmp_path, caplog, taus):
    """τ* is None (soft(τ*) is the hard head) where no τ lowers dev WER; the warning names it (one or several
    sources' τ); the table says so; older sweeps without the flag keep their τ*."""
    from softtok.recipes.asr import ASR_RULE, results_markdown
    from softtok.tokenizers.tau import TauSweep, best_tau, load_sweep, sweep_choice

    rows = [{"factor": f, "tau": t, "wer": 50.0 + f, "cer": 20.0, "seconds": 1.0} for f, t in zip((0.1, 1.0), taus)]
    hard = {"wer": 50.0, "cer": 20.0}
    with caplog.at_level("WARNING"):
        TauSweep("dev", 2.0, hard, rows, ASR_RULE).save(tmp_path)
    assert "no τ beats hard's dev wer" in caplog.text and "falls back to hard" in caplog.text
    assert best_tau(tmp_path) is None
    sweep = load_sweep(tmp_path)
    assert sweep["best"]["tau"] == taus[0] and not sweep["best"]["beats_hard"]
    old = {**sweep, "best": {k: v for k, v in sweep["best"].items() if k != "beats_hard"}}
    assert sweep_choice(old) == taus[0]
    results = {"search": "greedy", "K": {"8": {"test": {"hard": {"wer": 40.0, "cer": 10.0},
                                                       "soft": {"wer": 40.0, "cer": 10.0, "tau": None}},
                                              "_tau_sweep": sweep, "_soft_is_hard": True}}}
    md = results_markdown(results, "")
    assert "No τ beat hard on dev: soft (τ*) is the hard head here." in md and "falls back to hard" in md
