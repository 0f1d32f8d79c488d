"""SpeechBrain DASB discrete-SSL CTC ASR (per-layer k-means ids → one embedding table → attention over layers).

    softtok import-model speechbrain_dasb --hparams results/MP3S-LSTM/discrete_ssl/1986/hyperparams.yaml \\
        --ckpt-dir results/MP3S-LSTM/discrete_ssl/1986/save --kmeans L1.npy,L3.npy,L7.npy,L12.npy,L18.npy,L23.npy \\
        --feature hubert --checkpoint hubert-large-ll60k/ --out-dir bundles/dasb_hubert

DASB (the SpeechBrain benchmark's LibriSpeech ``ASR`` discrete-SSL recipe) quantises each SSL layer of
``ssl_layer_num`` with its own k-means (K = ``num_clusters``), offsets layer s's ids by s·K into the one table of
its ``Discrete_EmbeddingLayer`` (s: the layer's rank, as DiscreteSSL stacks the layers in ascending order),
weights the layers' embeddings per frame with its ``AttentionMLP`` and feeds the sum to ``enc`` (an LSTM or
ContextNet), ``ctc_lin`` and CTC. Each layer is one softtok source (the featurizer at that layer, its k-means
codebook; ``--kmeans`` and ``--feats`` in ``ssl_layer_num``'s order) and one token stream: hard ids look up rows
of the layer's block, soft p(k|x) gives p @ block (softtok's :class:`~softtok.downstream.embedding.TokenEmbedding`,
one per block), then the model's own attention pooling, encoder and SpeechBrain's CTC decoding (greedy, or
``test_beam_search`` without an LM). DASB's layer L (``hidden_states[L]`` of the SSL model, the output of
transformer layer L) is the featurizer's ``--layer L``.

Supported: ``enc``/``encoder`` of SpeechBrain's LSTM, GRU, RNN or ContextNet, ``num_codebooks`` an int, every
layer's K equal to ``num_clusters``, labels from a ``CTCTextEncoder``. Refused, by hparam: deduplicated units,
BPE over units, any other embedding, pooling or encoder class. The k-means models DASB downloads are joblib
pickles of sklearn's MiniBatchKMeans: loading one runs code, so they need ``--allow-pickle``; centroid ``.npy``
files (K, D) need nothing. The bundle keeps the centroids as ``.npy``, so no pickle is read after the import.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

import torch
from torch import nn

from softtok.adapters import AdapterError, Imported
from softtok.adapters.kmeans_files import read_kmeans
from softtok.adapters.speechbrain_hparams import (ObjectSpec, find_recoverable, flag_list, locate, lookup, object_spec,
                                                  pick_checkpoint, plain, read_hparams, load_state,
                                                  require_speechbrain)
from softtok.downstream.embedding import TokenEmbedding
from softtok.tokenizers.heads import Head, TokenInput
from softtok.tokenizers.kmeans import Codebook
from softtok.tokenizers.streams import split_list

KIND = "asr"
RNNS = ("speechbrain.nnet.RNN.LSTM", "speechbrain.nnet.RNN.GRU", "speechbrain.nnet.RNN.RNN")
ENCODERS = RNNS + ("speechbrain.lobes.models.ContextNet.ContextNet",)
LINEAR = "speechbrain.nnet.linear.Linear"
PICKLES = (".pt", ".pkl", ".pickle", ".joblib")
ROLES = ("embedding", "attention", "encoder", "ctc_lin")


class LayerEmbedding(nn.Module):
    """DASB's ``Discrete_EmbeddingLayer`` read by key (``embedding.weight`` (S·V, d), ``proj_layer.*``): layer s's
    block of rows is a one-stream TokenEmbedding, so hard, soft and top-k input take softtok's one embedding path;
    out (B, T, S, d)."""

    def __init__(self, sizes: Sequence[int], dim: int, hidden_dim: Optional[int] = None):
        super().__init__()
        self.sizes = list(sizes)
        self.blocks = nn.ModuleList(TokenEmbedding(k, dim) for k in self.sizes)
        self.proj_layer = nn.Linear(dim, hidden_dim) if hidden_dim and hidden_dim != dim else None

    @torch.no_grad()
    def load_table(self, state: Dict[str, torch.Tensor], offsets: Sequence[int], where: str) -> None:
        """Copy each layer's block (rows offset … offset+K) of the table; ``where`` names the file for errors."""
        table = state.pop("embedding.weight", None)
        if table is None:
            raise AdapterError(f"{where}: no embedding.weight (not a Discrete_EmbeddingLayer state)")
        for block, offset, k in zip(self.blocks, offsets, self.sizes):
            rows = table[offset:offset + k]
            if rows.shape != block.tables[0].weight.shape:
                raise AdapterError(f"{where}: embedding.weight is {tuple(table.shape)}, rows {offset}…{offset + k} "
                                   f"do not give a ({k}, {block.dim}) block")
            block.tables[0].weight.copy_(rows)
        if self.proj_layer is not None:
            self.proj_layer.load_state_dict({k[len("proj_layer."):]: v for k, v in state.items()
                                             if k.startswith("proj_layer.")})

    def forward(self, tokens: TokenInput) -> torch.Tensor:
        embs = torch.stack([block(tokens.stream(s, k)) for s, (block, k) in enumerate(zip(self.blocks, self.sizes))],
                           dim=-2)
        return self.proj_layer(embs) if self.proj_layer is not None else embs


class LayerAttention(nn.Module):
    """DASB's ``AttentionMLP`` read by key (``layers.0``, ``layers.2``): a score per frame and layer, softmax over
    the layers, the weighted sum of the layers' embeddings (B, T, S, d) → (B, T, d)."""

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1, bias=False))

    def forward(self, embs: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.layers(embs), dim=2)
        return torch.matmul(weights.transpose(2, -1), embs).squeeze(-2)


class DASBModel(nn.Module):
    """TokenInput (B, T, S, …) and relative lengths → CTC log-probabilities (B, T, V), as the recipe computes
    them."""

    def __init__(self, arch: Dict[str, Any]):
        super().__init__()
        from speechbrain.nnet.activations import Softmax

        emb = arch["embedding"]
        self.embedding = LayerEmbedding([arch["n_clusters"]] * len(arch["layers"]), emb["emb_dim"],
                                        emb.get("hidden_dim"))
        self.attention = LayerAttention(**arch["attention"])
        self.encoder = build_object(arch["encoder"])
        self.ctc_lin = build_object(arch["ctc_lin"])
        self.log_softmax = Softmax(apply_log=True)
        self.takes_lengths = arch["encoder"]["cls"] in RNNS

    def forward(self, tokens: TokenInput, rel_lens: torch.Tensor) -> torch.Tensor:
        x = self.attention(self.embedding(tokens))
        out = self.encoder(x, lengths=rel_lens) if self.takes_lengths else self.encoder(x)
        return self.log_softmax(self.ctc_lin(out[0] if isinstance(out, tuple) else out))


def build_object(entry: Dict[str, Any]) -> nn.Module:
    """A SpeechBrain module of the allow-list from its class path and keyword arguments."""
    import importlib

    module, name = entry["cls"].rsplit(".", 1)
    if entry["cls"] not in ENCODERS + (LINEAR,):
        raise AdapterError(f"{entry['cls']}: not a module this adapter builds")
    try:
        return getattr(importlib.import_module(module), name)(**entry["kwargs"])
    except (TypeError, ValueError) as exc:
        raise AdapterError(f"{entry['cls']}{entry['kwargs']}: cannot be built: {exc}") from None


def load_model(root: Path, arch: Dict[str, Any], device: str = "cpu") -> DASBModel:
    """The model of ``arch`` with its weights from the checkpoint files under ``root``."""
    model = DASBModel(arch)
    for role in ROLES:
        entry = arch["weights"][role]
        where = root / entry["file"]
        state = load_state(where, entry["prefix"])
        if role == "embedding":
            model.embedding.load_table(state, arch["table_offsets"], str(where))
            continue
        try:
            getattr(model, role).load_state_dict(state)
        except RuntimeError as exc:
            raise AdapterError(f"{where}: does not fit {role} ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval()


class DASBInference:
    """The adapter's decoder (the contract of :class:`~softtok.downstream.asr.decode.TokenASRInference`): batches by
    length where the encoder takes lengths, one utterance at a time otherwise (as the recipe tests)."""

    def __init__(self, model: DASBModel, labels: Any, arch: Dict[str, Any], head: Head, search: str, device: str):
        self.model, self.labels, self.head, self.search, self.device = model, labels, head, search, device
        if search not in ("greedy", "beam"):
            raise ValueError(f"unknown search {search!r}; choose from ('greedy', 'beam')")
        self.blank = int(arch["blank_index"])
        self._searcher = self._beam_searcher(arch) if search == "beam" else None

    def _beam_searcher(self, arch: Dict[str, Any]) -> Any:
        from speechbrain.decoders.ctc import CTCBeamSearcher

        conf = dict(arch.get("beam") or {})
        if conf.get("kenlm_model_path"):
            raise AdapterError("test_beam_search.kenlm_model_path: an n-gram LM is not supported; use --search greedy "
                               "or a beam without it")
        conf.pop("kenlm_model_path", None)
        vocab = [self.labels.ind2lab[i] for i in range(len(self.labels.ind2lab))]
        return CTCBeamSearcher(**{"blank_index": self.blank, **conf}, vocab_list=vocab)

    def groups(self, data: Any, batch_frames: int = 20000) -> List[List[str]]:
        return data.batches(batch_frames) if self.model.takes_lengths else [[u] for u in data.utts]

    @torch.inference_mode()
    def stream(self, data: Any, groups: Iterable[List[str]]) -> Iterator[Dict[str, str]]:
        for group in groups:
            utts, tokens, lengths, _, _ = data.collate(group, self.head, device=self.device)
            log_probs = self.model(tokens, relative_lengths(lengths))
            frames = (lengths * log_probs.shape[1]) // int(lengths.max())  # the encoder's frames of each utterance
            yield {utt: self.text(log_probs[i:i + 1, :n]) for i, (utt, n) in enumerate(zip(utts, frames.tolist()))}

    def text(self, log_probs: torch.Tensor) -> str:
        """SpeechBrain's CTC decoding of one utterance (1, T, V): greedy with the label encoder, or its beam."""
        whole = torch.ones(1, device=log_probs.device)
        if self._searcher is not None:
            hyps = self._searcher(log_probs, whole)[0]
            return hyps[0].text if hyps else ""
        from speechbrain.decoders.ctc import ctc_greedy_decode

        return "".join(self.labels.decode_ndim(ctc_greedy_decode(log_probs, whole, blank_id=self.blank)[0]))


def relative_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frame counts as SpeechBrain's relative lengths; its RNNs cut ``rel · T`` down to an int, so a quarter frame
    more keeps float rounding from dropping the last frame."""
    longest = int(lengths.max())
    return ((lengths.float() + 0.25) / longest).clamp(max=1.0)


def load_labels(path: Path) -> Any:
    """SpeechBrain's CTCTextEncoder from its saved file (Python literals, read without eval)."""
    from speechbrain.dataio.encoder import CTCTextEncoder

    labels = CTCTextEncoder()
    try:
        labels.load(path)
    except (OSError, ValueError, SyntaxError, RuntimeError) as exc:
        raise AdapterError(f"{path}: not a CTCTextEncoder file: {str(exc).splitlines()[0]}") from None
    return labels


def load_decoder(root: Path, spec: Dict[str, Any], head: Head, search: str, device: str) -> DASBInference:
    """The bundle's model and labels with ``head`` in front (the adapter contract)."""
    require_speechbrain()
    arch = spec["model"]
    if head.name == "continuous":
        raise ValueError("head 'continuous' does not fit a DASB model (it embeds k-means tokens)")
    labels = load_labels(Path(root) / arch["label_encoder"])
    return DASBInference(load_model(Path(root), arch, device), labels, arch, head, search, device)


# ---- import: the recipe's files → what the bundle holds ----------------------------------------------------------


def ssl_layers(tree: Dict[str, Any], given: Optional[str], where: str) -> List[int]:
    """The SSL layers the recipe tokenised, refusing deduplicated units and BPE over units by hparam."""
    key, layers = lookup(tree, "tokenizer_config.SSL_layers", "ssl_layer_num")
    if key is None and not given:
        raise AdapterError(f"{where}: no tokenizer_config.SSL_layers or ssl_layer_num; give --layers")
    layers = [int(x) for x in (plain(layers, key) if key else split_list(given))]
    if key and given and [int(x) for x in split_list(given)] != layers:
        raise AdapterError(f"--layers {given} differs from {key}: {layers} in {where}")
    dedup_key, dedup = lookup(tree, "tokenizer_config.deduplicates", "deduplicate")
    if dedup_key and any(flag_list(plain(dedup, dedup_key), len(layers))):
        raise AdapterError(f"{dedup_key}: {plain(dedup, dedup_key)}: deduplicated units (one embedding per run of "
                           "frames) cannot be soft-decoded")
    bpe_key, bpe = lookup(tree, "tokenizer_config.bpe_tokenizers", "bpe_tokenizer_path")
    if bpe_key and any(flag_list(plain(bpe, bpe_key), len(layers))):
        raise AdapterError(f"{bpe_key}: {plain(bpe, bpe_key)}: BPE over units (one embedding per piece) cannot be "
                           "soft-decoded")
    if len(set(layers)) != len(layers) or not layers:
        raise AdapterError(f"{key}: {layers}: expected distinct layers")
    return layers


def model_parts(tree: Dict[str, Any], where: str) -> Dict[str, ObjectSpec]:
    """The four modules inference needs, each of a class this adapter supports (else one line naming it)."""
    wanted = {"embedding": (("discrete_embedding_layer",), ".Discrete_EmbeddingLayer"),
              "attention": (("attention_mlp",), ".AttentionMLP"),
              "encoder": (("enc", "encoder"), ENCODERS), "ctc_lin": (("ctc_lin",), (LINEAR,))}
    parts = {}
    for role, (keys, accepted) in wanted.items():
        spec = object_spec(tree, *keys, where=where)
        if spec is None:
            raise AdapterError(f"{where}: no {' or '.join(keys)} (a DASB CTC model has one)")
        ok = ("." + spec.cls).endswith(accepted) if isinstance(accepted, str) else spec.cls in accepted
        if not ok:
            supported = f"a class named {accepted[1:]}" if isinstance(accepted, str) else ", ".join(accepted)
            raise AdapterError(f"{spec.key}: {spec.cls} is not supported (supported: {supported})")
        parts[role] = spec
    return parts


def architecture(tree: Dict[str, Any], parts: Dict[str, ObjectSpec], layers: List[int]) -> Dict[str, Any]:
    """What the bundle records to rebuild the model: sizes, the encoder and output layer, decoding settings."""
    emb, att = parts["embedding"], parts["attention"]
    n_codebooks, vocab = emb.kwargs.get("num_codebooks"), emb.kwargs.get("vocab_size")
    if not isinstance(n_codebooks, int) or n_codebooks != len(layers):
        raise AdapterError(f"{emb.key}.num_codebooks: {n_codebooks!r}, expected one codebook per SSL layer "
                           f"({len(layers)})")
    if not isinstance(vocab, int) or vocab < 1:
        raise AdapterError(f"{emb.key}.vocab_size: {vocab!r}, expected K > 0")
    _, blank = lookup(tree, "blank_index")
    _, beam = lookup(tree, "test_beam_search")
    ascending = sorted(layers)  # DiscreteSSL stacks the layers in ascending order: layer s's block is its rank's
    return {"layers": layers, "n_clusters": vocab, "table_offsets": [ascending.index(x) * vocab for x in layers],
            "embedding": {"emb_dim": emb.kwargs["emb_dim"], "hidden_dim": emb.kwargs.get("hidden_dim")},
            "attention": {"input_dim": att.kwargs["input_dim"], "hidden_dim": att.kwargs["hidden_dim"]},
            "encoder": {"cls": parts["encoder"].cls, "kwargs": parts["encoder"].kwargs},
            "ctc_lin": {"cls": parts["ctc_lin"].cls, "kwargs": parts["ctc_lin"].kwargs},
            "blank_index": int(blank or 0), "beam": plain(beam, "test_beam_search") if beam is not None else None}


def load_kmeans(paths: List[str], layers: List[int], allow_pickle: bool) -> List[Codebook]:
    """One codebook per layer (in ``ssl_layer_num``'s order): centroid .npy, or with ``allow_pickle`` DASB's
    joblib k-means; a file named ``…_L<n>.…`` must be layer n's."""
    if len(paths) != len(layers):
        raise AdapterError(f"--kmeans gives {len(paths)} file(s) for the {len(layers)} SSL layers {layers}")
    codebooks = []
    for path, layer in zip(map(Path, paths), layers):
        named = re.search(r"_L(\d+)\.[^.]+$", path.name)
        if named and int(named.group(1)) != layer:
            raise AdapterError(f"{path}: named for layer {named.group(1)}, but it stands for layer {layer} here")
        codebooks.append(read_kmeans(path, allow_pickle, PICKLES, "DASB's joblib k-means"))
    return codebooks


def label_file(tree: Dict[str, Any], ckpt: Path, given: Optional[str]) -> Path:
    """The CTCTextEncoder file: ``given``, the checkpoint's CTCTextEncoder recoverable, or the save folder's
    ``label_encoder.txt`` (where the recipe writes it)."""
    if given:
        return Path(given)
    name = find_recoverable(tree, ".CTCTextEncoder")
    candidates = ([ckpt / f"{name}.ckpt"] if name else []) + [ckpt.parent / "label_encoder.txt"]
    for path in candidates:
        if path.is_file():
            return path
    raise AdapterError(f"{ckpt}: no CTCTextEncoder recoverable and no {ckpt.parent / 'label_encoder.txt'}; give "
                       "--label-encoder")


def collect(args: argparse.Namespace) -> Imported:
    """Read and check the recipe's hparams, checkpoint, labels and k-means; build the model once to check shapes."""
    require_speechbrain()
    hparams = Path(args.hparams)
    tree = read_hparams(hparams)
    if args.layer is not None:
        raise AdapterError("--layer: the layers are the recipe's (ssl_layer_num); give --layers only if it has none")
    layers = ssl_layers(tree, args.layers, str(hparams))
    parts = model_parts(tree, str(hparams))
    arch = architecture(tree, parts, layers)
    codebooks = load_kmeans(split_list(args.kmeans), layers, args.allow_pickle)
    for layer, codebook in zip(arch["layers"], codebooks):
        if codebook.n_clusters != arch["n_clusters"]:
            raise AdapterError(f"{parts['embedding'].key}.vocab_size: {arch['n_clusters']}, but layer {layer}'s "
                               f"k-means has K={codebook.n_clusters}")
    ckpt = pick_checkpoint(Path(args.ckpt_dir), args.min_key, args.max_key)
    files, arch["weights"] = {"hyperparams.yaml": hparams}, {}
    for role, spec in parts.items():
        name, prefix = locate(tree, spec)
        arch["weights"][role] = {"file": f"ckpt/{name}.ckpt", "prefix": prefix}
        files[f"ckpt/{name}.ckpt"] = ckpt / f"{name}.ckpt"
    files["label_encoder.txt"] = label_file(tree, ckpt, args.label_encoder)
    arch.update(label_encoder="label_encoder.txt", hparams="hyperparams.yaml", checkpoint=ckpt.name)
    check_import(arch, files, ckpt)
    pickled = [p for p in split_list(args.kmeans) if Path(p).suffix in PICKLES]
    notes = [f"SpeechBrain checkpoint {ckpt.name}"] + (["k-means read from joblib pickles (--allow-pickle)"]
                                                      if pickled else [])
    return Imported(files=files, model=arch, codebooks=codebooks, layers=layers, notes=notes)


def check_import(arch: Dict[str, Any], files: Dict[str, Path], ckpt: Path) -> None:
    """Build the model from the checkpoint's files and check the labels fit ``ctc_lin``, before writing anything."""
    model = load_model(ckpt, {**arch, "weights": {r: {**w, "file": Path(w["file"]).name}
                                                  for r, w in arch["weights"].items()}})
    labels = load_labels(files["label_encoder.txt"])
    n_out = model.ctc_lin.w.out_features
    if len(labels.ind2lab) != n_out:
        raise AdapterError(f"{files['label_encoder.txt']}: {len(labels.ind2lab)} labels, ctc_lin.n_neurons {n_out}")


def add_args(p: argparse.ArgumentParser) -> None:
    """The recipe's files and the k-means opt-in."""
    p.add_argument("--hparams", required=True, help="the experiment's hyperparams.yaml (SpeechBrain writes it beside "
                                                    "save/; never executed here)")
    p.add_argument("--ckpt-dir", required=True, help="a CKPT+… folder, or the save folder to pick one from")
    p.add_argument("--min-key", help="pick the checkpoint with the lowest value of this meta key (default: WER "
                                     "where every checkpoint records it, else the newest)")
    p.add_argument("--max-key", help="or the highest value of this meta key")
    p.add_argument("--kmeans", required=True, help="one k-means per SSL layer, in ssl_layer_num's order, comma list: "
                                                   "centroid .npy (K, D), or DASB's joblib .pt with --allow-pickle")
    p.add_argument("--allow-pickle", action="store_true", help="load joblib/pickle k-means files (runs their code: "
                                                               "only for files you trust)")
    p.add_argument("--layers", help="the SSL layers (comma list) if the hparams do not name them")
    p.add_argument("--label-encoder", help="the CTCTextEncoder file (default: the checkpoint's, else "
                                           "save/label_encoder.txt)")


__all__ = ["KIND", "add_args", "collect", "load_decoder"]
