"""ESPnet asr2 models soft-decoded through softtok (``softtok import-model espnet_asr2``).

A tiny discrete-unit ASR model is trained by ESPnet's own trainer (``espnet2.bin.mt_train``, model ``discrete_asr``,
frontend ``embed``) on whisper k-means units of real speech written as the asr2 recipe writes them (cluster k as the
character U+4E00 + k, every frame kept, ``src_token_type char``, token lists from ``espnet2.bin.tokenize_text``), its
k-means model saved as ESPnet saves it (a joblib pickle of sklearn's MiniBatchKMeans). The reference is ESPnet's
own inference on the hard units: its ApplyKmeans argmin, its text preprocessing (``MTTask.build_preprocess_fn``) and
``Text2Text`` (the class ``espnet2.bin.mt_inference`` decodes with) on the experiment folder.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Tuple

import joblib
import kaldiio
import numpy as np
import pytest
import torch
import yaml

import softtok
from conftest import SPEECHOCEAN, make_speechocean_subset, needs_whisper
from softtok.cli import main
from softtok.downstream.asr.data import TokenASRData
from softtok.downstream.data import ArrayFeatures
from softtok.inference.inputs import collect_inputs
from softtok.tokenizers.datadir import load_data_dir, read_kaldi_map
from softtok.tokenizers.dump_features import dump_features

pytestmark = [needs_whisper, pytest.mark.skipif(not SPEECHOCEAN.is_dir(), reason=f"{SPEECHOCEAN} not present")]

K = 24
SRC_LANG = f"whisper_km{K}"
DECODE = {"beam_size": 3, "ctc_weight": 0.3, "nbest": 3, "lm_weight": 0.0}
TINY = {"frontend": "embed", "frontend_conf": {"embed_dim": 32, "positional_dropout_rate": 0.0},
        "encoder": "transformer", "encoder_conf": {"output_size": 32, "attention_heads": 2, "linear_units": 32,
                                                   "num_blocks": 1, "input_layer": "conv1d2", "dropout_rate": 0.0,
                                                   "positional_dropout_rate": 0.0, "attention_dropout_rate": 0.0},
        "decoder": "transformer", "decoder_conf": {"attention_heads": 2, "linear_units": 32, "num_blocks": 1,
                                                   "dropout_rate": 0.0, "positional_dropout_rate": 0.0,
                                                   "self_attention_dropout_rate": 0.0,
                                                   "src_attention_dropout_rate": 0.0},
        "model": "discrete_asr", "model_conf": {"ctc_weight": 0.3, "lsm_weight": 0.1},
        "optim": "adam", "optim_conf": {"lr": 0.002}, "max_epoch": 2, "batch_type": "unsorted", "batch_size": 4,
        "num_att_plot": 0, "use_tensorboard": False, "use_matplotlib": False, "num_workers": 0, "seed": 0,
        "best_model_criterion": [["valid", "acc", "max"]], "keep_nbest_models": 1}
NBest = List[Tuple[List[int], float]]


def espnet_units(feats: np.ndarray, km: Any) -> np.ndarray:
    """Cluster ids as ESPnet's dump_km_label.py ApplyKmeans computes them (argmin of ‖x‖² − 2xC + ‖C‖²)."""
    x, c = torch.from_numpy(feats), torch.from_numpy(km.cluster_centers_.T.astype(np.float32))
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ c + c.pow(2).sum(0, keepdim=True)).argmin(1).numpy()


def cjk(units: np.ndarray) -> str:
    """asr2.sh stage 4b, src_case ts: every frame's cluster k as chr(0x4e00 + k), no separator."""
    return "".join(chr(0x4E00 + int(k)) for k in units)


def write_lines(path: Path, lines: Dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} {v}\n" for k, v in sorted(lines.items())), encoding="utf-8")
    return path


def token_list(root: Path, text: Path, out: Path) -> Path:
    """A char token list as asr2.sh stage 7 makes it: espnet2.bin.tokenize_text over the text's second field."""
    from espnet2.bin.tokenize_text import main as tokenize_text

    plain = root / f"tokenize_{out.parent.name}.txt"
    plain.write_text("".join(line.split(" ", 1)[1] + "\n" for line in text.read_text(encoding="utf-8").splitlines()),
                     encoding="utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenize_text(["--token_type", "char", "--input", str(plain), "--output", str(out), "--field", "1-",
                   "--write_vocabulary", "true", "--add_symbol", "<blank>:0", "--add_symbol", "<unk>:1",
                   "--add_symbol", "<sos/eos>:-1"])
    return out


def prepare_set(root: Path, name: str, data: Path, feats: Dict[str, np.ndarray], km: Any) -> Path:
    """dump/raw/<set>: text.ts.en, text.ts.<units> and the shape files ESPnet's sampler reads."""
    out = root / "dump" / "raw" / name
    text = load_data_dir(data).text
    write_lines(out / f"text.ts.{SRC_LANG}", {u: cjk(espnet_units(f, km)) for u, f in feats.items()})
    write_lines(out / "text.ts.en", {u: text[u] for u in feats})
    write_lines(out / "src_shape", {u: str(len(f)) for u, f in feats.items()})
    write_lines(out / "tgt_shape", {u: str(len(text[u])) for u in feats})
    return out


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> Dict[str, Any]:
    """Whisper features of 8 train and 3 test utterances, ESPnet's MiniBatchKMeans (K=24) pickled in its km dir, and
    a discrete_asr model trained two epochs by espnet2.bin.mt_train in an asr2-style recipe folder."""
    from espnet2.bin.mt_train import main as mt_train
    from sklearn.cluster import MiniBatchKMeans

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("espnet")
    data = {"train": make_speechocean_subset(root / "data" / "train", 8),
            "test": make_speechocean_subset(root / "data" / "test", 3, split="test")}
    scp = {name: dump_features(str(d), "whisper", str(root / "dump" / "whisper" / name))["output"]
           for name, d in data.items()}
    feats = {name: dict(kaldiio.load_scp(path).items()) for name, path in scp.items()}
    km = MiniBatchKMeans(n_clusters=K, batch_size=10000, n_init=3, max_iter=50, compute_labels=False,
                         random_state=0).fit(np.concatenate(list(feats["train"].values())))
    km_dir = root / "exp" / "kmeans" / f"whisper_{K}clusters"
    km_dir.mkdir(parents=True)
    joblib.dump(km, km_dir / f"km_{K}.mdl")
    dirs = {name: prepare_set(root, name, data[name], feats[name], km) for name in data}
    src_list = token_list(root, dirs["train"] / f"text.ts.{SRC_LANG}",
                          root / "data" / "token_list" / f"char_{SRC_LANG}" / "src_tokens.txt")
    tgt_list = token_list(root, dirs["train"] / "text.ts.en", root / "data" / "token_list" / "char" / "tgt_tokens.txt")
    (root / "conf").mkdir()
    (root / "conf" / "train_tiny.yaml").write_text(yaml.safe_dump(TINY))
    (root / "conf" / "decode.yaml").write_text(yaml.safe_dump(DECODE))
    tr, va = (str(dirs[n].relative_to(root)) for n in ("train", "test"))
    with pytest.MonkeyPatch.context() as mp:  # ESPnet's recipes run from the recipe folder
        mp.chdir(root)
        mt_train(["--config", "conf/train_tiny.yaml", "--ngpu", "0", "--use_preprocessor", "true",
                  "--token_type", "char", "--token_list", str(tgt_list), "--src_token_type", "char",
                  "--src_token_list", str(src_list), "--bpemodel", "none", "--src_bpemodel", "none",
                  "--train_data_path_and_name_and_type", f"{tr}/text.ts.en,text,text",
                  "--train_data_path_and_name_and_type", f"{tr}/text.ts.{SRC_LANG},src_text,text",
                  "--valid_data_path_and_name_and_type", f"{va}/text.ts.en,text,text",
                  "--valid_data_path_and_name_and_type", f"{va}/text.ts.{SRC_LANG},src_text,text",
                  "--train_shape_file", f"{tr}/tgt_shape", "--train_shape_file", f"{tr}/src_shape",
                  "--valid_shape_file", f"{va}/tgt_shape", "--valid_shape_file", f"{va}/src_shape",
                  "--output_dir", "exp/asr_tiny"])
    return {"root": root, "data": data, "scp": scp, "km": km, "km_dir": km_dir, "exp": root / "exp" / "asr_tiny"}


def import_args(exp: Dict[str, Any], out: Path, exp_dir: Path | None = None, *extra: str) -> List[str]:
    return ["import-model", "espnet_asr2", "--exp-dir", str(exp_dir or exp["exp"]), "--decode-config",
            str(exp["root"] / "conf" / "decode.yaml"), "--feature", "whisper", "--out-dir", str(out), *extra]


@pytest.fixture(scope="module")
def bundle(exp) -> Dict[str, Any]:
    """The experiment imported with ESPnet's pickled km model (opted in), loaded, with the test set's features."""
    out = exp["root"] / "bundle"
    assert main(import_args(exp, out, None, "--kmeans", str(exp["km_dir"]), "--allow-pickle",
                            "--scale-feats", exp["scp"]["train"])) == 0
    model = softtok.load(out, device="cpu")
    items = collect_inputs([str(exp["data"]["test"])])
    feats = {i.key: model.features(i.read(), 16000, i.key) for i in items}
    return {"path": out, "model": model, "feats": feats}


def espnet_reference(exp: Dict[str, Any], feats: Dict[str, np.ndarray], config: Path | None = None,
                     as_text=cjk, **decode: Any) -> Dict[str, Any]:
    """ESPnet's own decoding of the hard units: unit text → its preprocessing → Text2Text on the experiment."""
    from espnet2.bin.mt_inference import Text2Text
    from espnet2.tasks.mt import MTTask

    config = config or exp["exp"] / "config.yaml"
    args = argparse.Namespace(**yaml.safe_load(config.read_text(encoding="utf-8")))
    preprocess = MTTask.build_preprocess_fn(args, train=False)
    text2text = Text2Text(str(config), str(exp["exp"] / "valid.acc.ave.pth"),
                          **{k: v for k, v in {**DECODE, **decode}.items() if k != "lm_weight"})
    return {u: text2text(preprocess(u, {"src_text": as_text(espnet_units(f, exp["km"]))})["src_text"])
            for u, f in feats.items()}


def nbest_of(results: List[Tuple[Any, ...]]) -> NBest:
    """(token ids, score) of each hypothesis of a Text2Text result."""
    return [(list(r[2]), float(r[3].score)) for r in results]


def adapter_results(model: Any, feats: Dict[str, np.ndarray], **head: Any) -> Dict[str, Any]:
    """The adapter's Text2Text results per utterance for one head (beam search, the bundle's decode config)."""
    decoder = model.decoder(search="beam", **head)
    data = TokenASRData(ArrayFeatures(feats, model.source_dims))
    return {u: decoder.nbest(data.collate([u], decoder.head, device="cpu")[1]) for u in feats}


def one_error(caplog: pytest.LogCaptureFixture) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


@pytest.mark.parametrize("head", [{"head": "hard"}, {"head": "soft", "tau": 1e-6},
                                  {"head": "soft", "tau": 1e-6, "top_k": 3}], ids=["hard", "soft", "soft_topk"])
def test_tau_to_zero_gives_espnets_own_nbest(exp, bundle, head):
    """Hard ids, and soft input (dense, top-k) at τ → 0, give ESPnet's n-best on the hard units: the same token ids
    and the same scores for every hypothesis."""
    reference = espnet_reference(exp, bundle["feats"])
    mine = adapter_results(bundle["model"], bundle["feats"], **head)
    assert {u: nbest_of(r) for u, r in mine.items()} == {u: nbest_of(r) for u, r in reference.items()}
    assert all(len(r) == DECODE["nbest"] and r[0][0] for r in reference.values())


@pytest.mark.parametrize("top_k", [None, 8])
def test_soft_at_a_moderate_tau_changes_the_hypotheses(bundle, top_k):
    hard = adapter_results(bundle["model"], bundle["feats"], head="hard")
    soft = adapter_results(bundle["model"], bundle["feats"], head="soft", tau_factor=1.0, top_k=top_k)
    assert any(soft[u][0][0] != hard[u][0][0] for u in hard)
    assert all(nbest_of(soft[u]) != nbest_of(hard[u]) and soft[u][0][0] for u in hard)


def test_transcribe_cli_gives_espnets_1best(exp, bundle, tmp_path):
    """``softtok transcribe`` from audio: soft at τ → 0 with beam search is ESPnet's beam 1-best; the default (the
    bundle's hard head, greedy: beam size 1) is ESPnet's beam-1 decoding."""
    for extra, decode in ((["--head", "soft", "--tau", "1e-6", "--search", "beam"], {}), ([], {"beam_size": 1})):
        out = tmp_path / "hyp"
        assert main(["transcribe", str(bundle["path"]), str(exp["data"]["test"]), "--device", "cpu", "--out",
                     str(out), *extra]) == 0
        reference = espnet_reference(exp, bundle["feats"], **decode)
        assert read_kaldi_map(out, require_sorted=False) == {u: r[0][0] for u, r in reference.items()}


def test_pickle_needs_the_opt_in_and_a_converted_npy_gives_the_same_bundle(exp, bundle, tmp_path, caplog):
    assert main(import_args(exp, tmp_path / "b", None, "--kmeans", str(exp["km_dir"]))) == 1
    assert "--allow-pickle" in one_error(caplog) and not (tmp_path / "b").exists()
    npy = tmp_path / "km.npy"
    np.save(npy, joblib.load(exp["km_dir"] / f"km_{K}.mdl").cluster_centers_)
    assert main(import_args(exp, tmp_path / "b", None, "--kmeans", str(npy))) == 0
    mine, theirs = softtok.load(tmp_path / "b", device="cpu"), bundle["model"]
    assert np.array_equal(mine.codebooks[0].centroids, theirs.codebooks[0].centroids)
    assert mine.bundle.spec["model"]["unit_rows"] == theirs.bundle.spec["model"]["unit_rows"]


def edited_exp(exp: Dict[str, Any], dest: Path, edit: Dict[str, Any]) -> Path:
    """A copy of the experiment folder whose config.yaml has ``edit`` applied (weights shared by a link)."""
    dest.mkdir()
    config = yaml.safe_load((exp["exp"] / "config.yaml").read_text(encoding="utf-8"))
    (dest / "config.yaml").write_text(yaml.safe_dump({**config, **edit}, allow_unicode=True), encoding="utf-8")
    (dest / "valid.acc.ave.pth").symlink_to(exp["exp"] / "valid.acc.ave.pth")
    return dest


def src_text_renamed(exp: Dict[str, Any], name: str) -> Dict[str, Any]:
    config = yaml.safe_load((exp["exp"] / "config.yaml").read_text(encoding="utf-8"))
    paths = [[str(Path(p).with_name(name)) if n == "src_text" else p, n, t]
             for p, n, t in config["train_data_path_and_name_and_type"]]
    return {"train_data_path_and_name_and_type": paths}


REFUSED = {  # config edit, codebook change → what the one error line names
    "bpe": (lambda e: {"src_token_type": "bpe"}, None, "config.yaml: src_token_type: bpe"),
    "dedup": (lambda e: src_text_renamed(e, f"text.rm.{SRC_LANG}"), None, "text.rm.whisper_km24: src_case rm"),
    "case_unknown": (lambda e: src_text_renamed(e, "units.txt"), None, "give --src-case ts"),
    "frontend": (lambda e: {"frontend": None, "input_size": 32}, None, "config.yaml: frontend: None"),
    "K": (lambda e: {}, lambda c: c[:10], "src_token_list has unit"),
    "dim": (lambda e: {}, lambda c: c[:, :8], "whisper features are 384-dim, the codebook's centroids 8-dim"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unsupported_models_are_refused_in_one_line(exp, tmp_path, caplog, case):
    edit, change, message = REFUSED[case]
    exp_dir = edited_exp(exp, tmp_path / "exp", edit(exp))
    centroids = exp["km"].cluster_centers_.astype(np.float32)
    np.save(tmp_path / "km.npy", change(centroids) if change else centroids)
    assert main(import_args(exp, tmp_path / "b", exp_dir, "--kmeans", str(tmp_path / "km.npy"))) == 1
    assert message in one_error(caplog) and not (tmp_path / "b").exists()


def test_unit_ids_written_as_words_are_read_too(exp, bundle, tmp_path):
    """``src_token_type: word`` with the unit ids as tokens (same rows, same weights): τ → 0 gives ESPnet's n-best on
    the id text."""
    config = yaml.safe_load((exp["exp"] / "config.yaml").read_text(encoding="utf-8"))
    words = [str(ord(t) - 0x4E00) if len(t) == 1 else t for t in config["src_token_list"]]
    exp_dir = edited_exp(exp, tmp_path / "exp", {"src_token_type": "word", "src_token_list": words})
    assert main(import_args(exp, tmp_path / "b", exp_dir, "--kmeans", str(exp["km_dir"]), "--allow-pickle")) == 0
    model = softtok.load(tmp_path / "b", device="cpu")
    assert model.bundle.spec["model"]["unit_rows"] == bundle["model"].bundle.spec["model"]["unit_rows"]
    reference = espnet_reference(exp, bundle["feats"], exp_dir / "config.yaml",
                                 lambda units: " ".join(str(int(k)) for k in units))
    mine = adapter_results(model, bundle["feats"], head="soft", tau=1e-6)
    assert {u: nbest_of(r) for u, r in mine.items()} == {u: nbest_of(r) for u, r in reference.items()}
