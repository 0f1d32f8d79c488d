"""The SpeechBrain DASB adapter on real speech: a tiny DASB-style discrete-SSL CTC model (per-layer k-means ids
offset into one embedding table, attention over layers, SpeechBrain's LSTM and Linear) built from its
hyperparams.yaml by HyperPyYAML, briefly trained and saved by SpeechBrain's Checkpointer, then imported with
``softtok import-model speechbrain_dasb`` and decoded through ``softtok.load``. Whisper layers 2 and 4 stand in
for the SSL layers, with k = 16 sklearn k-means per layer saved as DASB saves them (joblib).

``Discrete_EmbeddingLayer`` and ``AttentionMLP`` live in the DASB benchmark's ``custom_model.py``, not in the
speechbrain package, so ``custom_model.py`` here defines them with the benchmark's argument names and state-dict
keys (``embedding.weight`` (S·K, d), ``proj_layer.*``; ``layers.0.*``, ``layers.2.weight``)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
import yaml

import softtok
from conftest import SPEECHOCEAN, make_speechocean_subset, needs_whisper
from softtok.adapters import AdapterError
from softtok.adapters.speechbrain_dasb import DASBInference
from softtok.cli import main
from softtok.downstream.asr.data import TokenASRData
from softtok.downstream.data import ArrayFeatures
from softtok.inference.bundle import read_bundle
from softtok.inference.model import read_wave
from softtok.tokenizers.datadir import load_data_dir
from softtok.tokenizers.features.base import build_featurizer

sb = pytest.importorskip("speechbrain")
pytestmark = [needs_whisper, pytest.mark.skipif(not SPEECHOCEAN.is_dir(), reason=f"{SPEECHOCEAN} not present"),
              pytest.mark.usefixtures("one_thread")]

LAYERS = [4, 2]  # as ssl_layer_num lists them; DASB's DiscreteSSL stacks the layers in ascending order
K = 16
N_UTTS = 10

CUSTOM_MODEL = '''
import torch


class AttentionMLP(torch.nn.Module):
    """A softmax weight per frame over the layers (the DASB benchmark's key layout)."""

    def __init__(self, input_dim, hidden_dim):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(input_dim, hidden_dim), torch.nn.ReLU(),
                                          torch.nn.Linear(hidden_dim, 1, bias=False))

    def forward(self, x):
        return torch.softmax(self.layers(x), dim=2)


class Discrete_EmbeddingLayer(torch.nn.Module):
    """One table of num_codebooks * vocab_size rows; codebook s's ids are offset by s * vocab_size."""

    def __init__(self, num_codebooks, vocab_size, emb_dim, init=False, freeze=False, hidden_dim=None):
        super().__init__()
        self.num_codebooks, self.vocab_size = num_codebooks, vocab_size
        self.embedding = torch.nn.Embedding(num_codebooks * vocab_size, emb_dim)
        self.proj_layer = torch.nn.Linear(emb_dim, hidden_dim) if hidden_dim and hidden_dim != emb_dim else None

    def forward(self, tokens):
        offsets = torch.arange(self.num_codebooks, device=tokens.device) * self.vocab_size
        embs = self.embedding(tokens + offsets)
        return self.proj_layer(embs) if self.proj_layer is not None else embs
'''

HPARAMS = '''
seed: 1986
__set_seed: !apply:torch.manual_seed [!ref <seed>]
output_folder: !ref {root}/results/discrete_ssl/<seed>
save_folder: !ref <output_folder>/save
data_folder: !PLACEHOLDER
ssl_hub: facebook/hubert-large-ll60k
ssl_folder: !ref <save_folder>/ssl_checkpoint
kmeans_repo_id: speechbrain/SSL_Quantization
kmeans_cache_dir: !ref <save_folder>/kmeans_checkpoint
kmeans_dataset: LibriSpeech-100-360-500
num_clusters: {k}
ssl_layer_num: {layers}
num_codebooks: 2
deduplicate: [False, False]
bpe_tokenizer_path: [null, null]
encoder_dim: 32
output_neurons: {n_labels}
blank_index: 0
unk_index: 1
test_beam_search:
   beam_size: 8
   topk: 1
   blank_index: !ref <blank_index>
   space_token: ' '
   beam_prune_logp: -12.0
   token_prune_min_logp: -1.2
   prune_history: True
   alpha: 0.8
   beta: 1.2
   kenlm_model_path: null
epoch_counter: !new:speechbrain.utils.epoch_loop.EpochCounter
   limit: 1
tokenizer_config:
   SSL_layers: !ref <ssl_layer_num>
   deduplicates: !ref <deduplicate>
   bpe_tokenizers: !ref <bpe_tokenizer_path>
ssl_model: !new:speechbrain.lobes.models.huggingface_transformers.hubert.HuBERT
   source: !ref <ssl_hub>
   output_norm: False
   freeze: True
   output_all_hiddens: True
   save_path: !ref <ssl_folder>
codec: !new:speechbrain.lobes.models.huggingface_transformers.discrete_ssl.DiscreteSSL
   save_path: !ref <kmeans_cache_dir>
   ssl_model: !ref <ssl_model>
   kmeans_dataset: !ref <kmeans_dataset>
   kmeans_repo_id: !ref <kmeans_repo_id>
   num_clusters: !ref <num_clusters>
discrete_embedding_layer: !new:custom_model.Discrete_EmbeddingLayer
   num_codebooks: !ref <num_codebooks>
   vocab_size: !ref <num_clusters>
   emb_dim: 24
   hidden_dim: !ref <encoder_dim>
attention_mlp: !new:custom_model.AttentionMLP
   input_dim: !ref <encoder_dim>
   hidden_dim: !ref <encoder_dim>
enc: {encoder}
ctc_lin: !new:speechbrain.nnet.linear.Linear
   input_size: {enc_out}
   n_neurons: !ref <output_neurons>
log_softmax: !new:speechbrain.nnet.activations.Softmax
   apply_log: True
ctc_cost: !name:speechbrain.nnet.losses.ctc_loss
   blank_index: !ref <blank_index>
modules:
   enc: !ref <enc>
   ctc_lin: !ref <ctc_lin>
   attention_mlp: !ref <attention_mlp>
   codec: !ref <codec>
   discrete_embedding_layer: !ref <discrete_embedding_layer>
model: !new:torch.nn.ModuleList
   - [!ref <enc>, !ref <ctc_lin>, !ref <discrete_embedding_layer>]
label_encoder: !new:speechbrain.dataio.encoder.CTCTextEncoder
checkpointer: !new:speechbrain.utils.checkpoints.Checkpointer
   checkpoints_dir: !ref <save_folder>
   recoverables:
      model: !ref <model>
      attention_mlp: !ref <attention_mlp>
      codec: !ref <codec>
      discrete_embedding_layer: !ref <discrete_embedding_layer>
      counter: !ref <epoch_counter>
      tokenizer: !ref <label_encoder>
'''
ENCODERS = {  # name: (the enc entry, its output size)
    "lstm": ("""!new:speechbrain.nnet.RNN.LSTM
   input_shape: [null, null, !ref <encoder_dim>]
   num_layers: 1
   bidirectional: True
   hidden_size: 64""", 128),
    "contextnet": ("""!new:speechbrain.lobes.models.ContextNet.ContextNet
   input_shape: [null, null, !ref <encoder_dim>]
   out_channels: 32
   conv_channels: [32, 32]
   strides: [1, 1]
   num_blocks: 2
   num_layers: 1
   inner_dim: 4""", 32),
}
# the SSL model and codec download when built: the test builds stand-ins, the importer must build neither
STAND_INS = "ssl_model: !new:torch.nn.Identity\ncodec: !new:torch.nn.Identity\n"


def layer_features(paths: Dict[str, str]) -> Dict[int, Dict[str, np.ndarray]]:
    """Whisper features of each layer (the SSL layers' stand-in), per utterance."""
    feats: Dict[int, Dict[str, np.ndarray]] = {}
    for layer in sorted(LAYERS):
        featurizer = build_featurizer("whisper", None, layer, "cpu")
        with torch.inference_mode():
            feats[layer] = {u: featurizer(read_wave(p, None, u)).float().numpy() for u, p in paths.items()}
    return feats


def learn_kmeans(feats: Dict[int, Dict[str, np.ndarray]], out: Path) -> Dict[int, object]:
    """One sklearn k-means per layer, saved as DASB's DiscreteSSL finds them (joblib ``…_k<K>_L<layer>.pt``) and as
    centroid .npy."""
    import joblib
    from sklearn.cluster import MiniBatchKMeans

    models = {}
    for layer, by_utt in feats.items():
        km = MiniBatchKMeans(K, random_state=0, n_init=1, batch_size=1024).fit(np.concatenate(list(by_utt.values())))
        joblib.dump(km, out / f"LibriSpeech_whisper_k{K}_L{layer}.pt")
        np.save(out / f"whisper_k{K}_L{layer}.npy", km.cluster_centers_.astype(np.float32))
        models[layer] = km
    return models


def hard_ids(kms: Dict[int, object], feats: Dict[int, Dict[str, np.ndarray]], utt: str) -> torch.Tensor:
    """(T, S) ids as DiscreteSSL.encode makes them: each layer's k-means ``predict``, layers ascending."""
    return torch.stack([torch.from_numpy(kms[layer].predict(feats[layer][utt])).long() for layer in sorted(LAYERS)],
                       dim=-1)


def log_probs(hp: Dict, ids: torch.Tensor) -> torch.Tensor:
    """The recipe's compute_forward on token ids (B, T, S): embed, attention-pool the layers, enc, ctc_lin."""
    embs = hp["discrete_embedding_layer"](ids)
    att_w = hp["attention_mlp"](embs)
    x = torch.matmul(att_w.transpose(2, -1), embs).squeeze(-2)
    out = hp["enc"](x)
    return hp["log_softmax"](hp["ctc_lin"](out[0] if isinstance(out, tuple) else out))  # an RNN gives (out, h)


def train_briefly(hp: Dict, ids: List[torch.Tensor], targets: List[torch.Tensor], steps: int = 100,
                  lr: float = 2e-2) -> None:
    """A few full-batch Adam steps of the recipe's CTC loss, so the hypotheses are words, not noise."""
    pad = torch.nn.utils.rnn.pad_sequence
    x, y = pad(ids, batch_first=True), pad(targets, batch_first=True)
    x_lens = torch.tensor([len(i) for i in ids]) / x.shape[1]
    y_lens = torch.tensor([len(t) for t in targets]) / y.shape[1]
    params = [p for key in ("discrete_embedding_layer", "attention_mlp", "enc", "ctc_lin")
              for p in hp[key].parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        hp["ctc_cost"](log_probs(hp, x), y, x_lens, y_lens).backward()
        opt.step()


@pytest.fixture(scope="module")
def shared(tmp_path_factory, one_thread):
    """Real utterances, their per-layer features, the per-layer k-means and the hard ids DiscreteSSL would give."""
    root = tmp_path_factory.mktemp("dasb")
    data = load_data_dir(make_speechocean_subset(root / "data", N_UTTS))
    paths = {u: data.wav_scp[u] for u in data.utt_ids}
    feats = layer_features(paths)
    kms = learn_kmeans(feats, root)
    (root / "custom_model.py").write_text(CUSTOM_MODEL)
    return {"root": root, "paths": paths, "text": {u: data.text[u] for u in paths}, "feats": feats, "kms": kms,
            "ids": {u: hard_ids(kms, feats, u) for u in paths}}


def experiment(shared: Dict, name: str, train: bool) -> Dict:
    """A DASB experiment folder as SpeechBrain leaves it (hyperparams.yaml, save/CKPT+…, label_encoder.txt) and the
    recipe's own hypotheses on the hard ids, greedy and beam, one utterance per batch as the recipe tests."""
    from hyperpyyaml import load_hyperpyyaml, resolve_references
    from speechbrain.decoders.ctc import CTCBeamSearcher, ctc_greedy_decode

    root, texts = shared["root"] / name, shared["text"]
    chars = sorted({c for text in texts.values() for c in text})
    encoder, enc_out = ENCODERS[name]
    source = shared["root"] / f"train_{name}.yaml"
    source.write_text(HPARAMS.format(root=root, k=K, layers=LAYERS, n_labels=len(chars) + 2, encoder=encoder,
                                     enc_out=enc_out))
    exp = root / "results" / "discrete_ssl" / "1986"
    exp.mkdir(parents=True)
    with open(source) as f:  # what sb.create_experiment_directory writes beside save/
        (exp / "hyperparams.yaml").write_text(resolve_references(f, {"data_folder": str(root)}).getvalue())
    sys.path.insert(0, str(shared["root"]))
    try:
        with open(source) as f:
            hp = load_hyperpyyaml(f, f"data_folder: {root}\n{STAND_INS}")
    finally:
        sys.path.remove(str(shared["root"]))
    labels = hp["label_encoder"]
    labels.load_or_create(exp / "save" / "label_encoder.txt", from_iterables=[[list(t) for t in texts.values()]],
                          sequence_input=True, special_labels={"blank_label": 0, "unk_label": 1})
    ids = shared["ids"]
    hp["checkpointer"].save_checkpoint(meta={"WER": 100.0})  # untrained: the importer must pick the better one
    if train:
        train_briefly(hp, list(ids.values()), [torch.tensor(labels.encode_sequence(list(texts[u]))) for u in ids])
    hp["checkpointer"].save_checkpoint(meta={"WER": 50.0})
    for module in hp["modules"].values():
        module.eval()
    beam = CTCBeamSearcher(**hp["test_beam_search"], vocab_list=[labels.ind2lab[i] for i in range(len(chars) + 2)])
    greedy, beamed = {}, {}
    with torch.inference_mode():
        for u in ids:
            lp, lens = log_probs(hp, ids[u][None]), torch.ones(1)
            greedy[u] = "".join(labels.decode_ndim(ctc_greedy_decode(lp, lens, blank_id=0)[0]))
            beamed[u] = beam(lp, lens)[0][0].text
    return {**shared, "exp": exp, "greedy": greedy, "beam": beamed}


@pytest.fixture(scope="module")
def dasb(shared):
    """The LSTM recipe's experiment, briefly trained."""
    return experiment(shared, "lstm", train=True)


def import_args(dasb, out: Path, *extra: str, hparams: Path | None = None) -> List[str]:
    root = dasb["root"]
    kmeans = ",".join(str(root / f"LibriSpeech_whisper_k{K}_L{layer}.pt") for layer in LAYERS)
    return ["import-model", "speechbrain_dasb", "--hparams", str(hparams or dasb["exp"] / "hyperparams.yaml"),
            "--ckpt-dir", str(dasb["exp"] / "save"), "--kmeans", kmeans, "--allow-pickle", "--feature", "whisper",
            "--out-dir", str(out), *extra]


@pytest.fixture(scope="module")
def bundle(dasb):
    out = dasb["root"] / "bundle"
    assert main(import_args(dasb, out)) == 0
    return out


@pytest.fixture(scope="module")
def loaded(dasb, bundle):
    """The bundle through softtok.load, with each utterance's features (every source, stacked) computed once."""
    model = softtok.load(bundle, device="cpu")
    return model, {u: model.features(p) for u, p in dasb["paths"].items()}


def hypotheses(model, feats, **settings) -> Dict[str, str]:
    return {u: h for batch in model.decode_features(feats, **settings) for u, h in batch.items()}


def test_bundle_records_the_layers_and_their_table_blocks(dasb, bundle):
    spec = read_bundle(bundle).spec
    assert spec["model"]["format"] == "speechbrain_dasb" and spec["kind"] == "asr"
    assert [s["layer"] for s in spec["sources"]] == spec["model"]["layers"] == LAYERS  # ssl_layer_num's order
    assert spec["model"]["table_offsets"] == [K, 0]  # layer 4's ids are the second block: DiscreteSSL sorts
    assert spec["model"]["weights"]["encoder"] == {"file": "ckpt/model.ckpt", "prefix": "0."}
    assert spec["model"]["weights"]["attention"] == {"file": "ckpt/attention_mlp.ckpt", "prefix": ""}
    assert not any("codec" in name for name in spec["files"])  # the SSL model's weights stay out
    chosen = spec["model"]["checkpoint"]
    assert "WER: 50.0" in (dasb["exp"] / "save" / chosen / "CKPT.yaml").read_text()


def test_hard_and_cold_soft_give_speechbrains_own_hypotheses(dasb, loaded):
    model, feats = loaded
    hard, ascending = model.head("hard"), [sorted(LAYERS).index(layer) for layer in LAYERS]
    for u in feats:  # the bundle's hard head picks the k-means' own predictions
        assert torch.equal(hard(torch.from_numpy(feats[u])).ids, dasb["ids"][u][:, ascending])
    data = TokenASRData(ArrayFeatures(feats, model.source_dims))
    assert len(model.decoder("hard").groups(data)[0]) == len(feats)  # one padded batch of every length, packed
    assert sum(len(h) for h in dasb["greedy"].values()) > 0
    assert hypotheses(model, feats, head="hard") == dasb["greedy"]
    assert hypotheses(model, feats, head="soft", tau=1e-6) == dasb["greedy"]
    assert hypotheses(model, feats, head="soft", tau=1e-6, top_k=4) == dasb["greedy"]
    assert hypotheses(model, feats, head="soft", tau=1e-6, search="beam") == dasb["beam"]


def test_soft_at_a_moderate_tau_changes_the_output(dasb, loaded):
    model, feats = loaded
    scale = [float(np.median(dasb["kms"][layer].transform(np.concatenate(list(dasb["feats"][layer].values())))
                             .min(axis=1) ** 2)) for layer in LAYERS]  # median squared distance to the nearest centre
    soft = hypotheses(model, feats, head="soft", tau=[0.1 * s for s in scale])  # the toy model knows hard ids only
    assert soft.keys() == dasb["greedy"].keys() and soft != dasb["greedy"] and all(soft.values())


def test_contextnet_decodes_one_utterance_at_a_time_as_the_recipe(shared, loaded, tmp_path):
    exp = experiment(shared, "contextnet", train=False)  # its squeeze-excite means over time: padding would count
    assert main(import_args(exp, tmp_path / "bundle")) == 0
    model, feats = softtok.load(tmp_path / "bundle", device="cpu"), loaded[1]
    data = TokenASRData(ArrayFeatures(feats, model.source_dims))
    assert all(len(group) == 1 for group in model.decoder("hard").groups(data))
    assert sum(len(h) for h in exp["greedy"].values()) > 0
    assert hypotheses(model, feats, head="hard") == hypotheses(model, feats, head="soft", tau=1e-6) == exp["greedy"]


def test_transcribe_cli_and_npy_centroids(dasb, bundle, tmp_path, capsys):
    utts = list(dasb["paths"])[:2]
    assert main(["transcribe", str(bundle), *[dasb["paths"][u] for u in utts], "--head", "hard", "--format", "jsonl",
                 "--device", "cpu"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in lines] == [dasb["greedy"][u] for u in utts]
    npy = ",".join(str(dasb["root"] / f"whisper_k{K}_L{layer}.npy") for layer in LAYERS)
    args = import_args(dasb, tmp_path / "npy")
    args[args.index("--kmeans") + 1] = npy
    args.remove("--allow-pickle")
    assert main(args) == 0
    for mine, theirs in zip(read_bundle(tmp_path / "npy").codebooks(), read_bundle(bundle).codebooks()):
        assert np.array_equal(mine.centroids, theirs.centroids)


def test_kmeans_named_for_another_layer_is_refused(dasb, tmp_path, caplog):
    args = import_args(dasb, tmp_path / "out")
    at = args.index("--kmeans") + 1
    args[at] = ",".join(reversed(args[at].split(",")))
    assert main(args) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "named for layer 2, but it stands for layer 4" in errors[0], errors


def test_feature_dumps_of_other_layers_are_refused(dasb, bundle, tmp_path, caplog):
    scps = []
    for source in read_bundle(bundle).sources:  # softtok dumps' feats.yaml of each layer, in ssl_layer_num's order
        spec = {"feature": source["name"], "dim": source["dim"], "frame_rate": source["frame_rate"],
                "layer": source["layer"], **source["options"]}
        (tmp_path / str(source["layer"])).mkdir()
        (tmp_path / str(source["layer"]) / "feats.yaml").write_text(yaml.safe_dump(spec))
        scps.append(str(tmp_path / str(source["layer"]) / "feats.scp"))
    args = import_args(dasb, tmp_path / "out")
    at = args.index("--feature")
    args[at:at + 2] = ["--feats", ",".join(reversed(scps))]
    assert main(args) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "features are of layers [2, 4], the model's tokens of layers [4, 2]" in errors[0]
    args[at + 1] = ",".join(scps)
    assert main(args) == 0


REFUSALS = {  # case: (edits of the saved hyperparams.yaml (regex, replacement), what the one line names)
    "pickle": ([], "--allow-pickle"),
    "deduplicate": ([(r"(deduplicate: (&\w+ )?)\[false, false\]", r"\1[true, false]")],
                    "tokenizer_config.deduplicates: [True, False]"),
    "bpe": ([(r"(bpe_tokenizer_path: (&\w+ )?)\[null, null\]", r"\1[null, bpe.model]")],
            "bpe_tokenizers: [None, 'bpe.model']: BPE"),
    "encoder": ([(r"speechbrain\.nnet\.RNN\.LSTM", "speechbrain.lobes.models.transformer.Conformer.ConformerEncoder")],
                "enc: speechbrain.lobes.models.transformer"),
    "num_codebooks": ([(r"(Discrete_EmbeddingLayer\n\s+num_codebooks:) 2", r"\1 3")],
                      "discrete_embedding_layer.num_codebooks: 3"),
    "vocab_size": ([(rf"vocab_size: {K}", f"vocab_size: {2 * K}")],
                   f"vocab_size: {2 * K}, but layer 4's k-means has K={K}"),
    "applyref": ([(r"seed: 1986", "seed: !applyref:os.getcwd []")], "!applyref:os.getcwd runs code"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_configurations_are_one_line_naming_the_hparam(dasb, tmp_path, caplog, case):
    edits, expected = REFUSALS[case]
    text = (dasb["exp"] / "hyperparams.yaml").read_text()
    for pattern, replacement in edits:
        text, n = re.subn(pattern, replacement, text, count=1)
        assert n == 1, pattern
    hparams = tmp_path / "hyperparams.yaml"
    hparams.write_text(text)
    args = import_args(dasb, tmp_path / "out", hparams=hparams)
    if case == "pickle":
        args.remove("--allow-pickle")
    assert main(args) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and expected in errors[0], errors
    assert not (tmp_path / "out").exists()


def test_a_beam_with_an_lm_is_refused_in_one_line():
    arch = {"blank_index": 0, "beam": {"beam_size": 4, "kenlm_model_path": "4gram.arpa"}}
    with pytest.raises(AdapterError, match="test_beam_search.kenlm_model_path"):
        DASBInference(None, None, arch, None, "beam", "cpu")
