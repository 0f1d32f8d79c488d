"""Decode a trained TokenASR model with any head: CTC greedy (batched) or joint CTC/attention beam search.

    softtok asr decode --exp-dir exp/asr_hard_k128 \\
        --feats dump/whisper/test/feats.scp --text data/test/text \\
        --head soft --tau 2.0 --search greedy --out-dir exp/asr_hard_k128/decode_soft_tau2_greedy/test

``--tau auto [--tau-scope set|utterance] [--tau-factor F]``: τ = F (default: the model's dev f*) × the median nearest
squared distance of the decoded features themselves, over the whole set or per utterance (no labels).
The out dir gets ``hyp``, ``ref``, ``wer.txt``, ``per_utt.txt``, ``score.yaml`` and
``decode.yaml`` (settings, timing and a set's automatic τ).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from softtok.common import default_device, int_at_least, run_job, setup_logging
from softtok.downstream.asr.data import TokenASRData
from softtok.downstream.asr.train import load_trained
from softtok.downstream.fused import LogitOverflow, fuses
from softtok.downstream.scoring import write_score_dir
from softtok.tokenizers.datadir import read_kaldi_map
from softtok.tokenizers.fileio import save_yaml
from softtok.tokenizers.jobs import feature_spec_of
from softtok.tokenizers.kmeans import Codebook
from softtok.tokenizers.heads import ContinuousHead, add_head_args, build_head, head_conf_of
from softtok.tokenizers.streams import split_list
from softtok.tokenizers.tau import DegenerateTau, as_list, dev_factor, one_or_list

logger = logging.getLogger(__name__)
SEARCHES = ("greedy", "beam")


def model_source_dims(config: Dict[str, Any], codebooks: Optional[List[Codebook]]) -> List[int]:
    """The feature dim of each source a trained model reads (its codebooks', or its continuous input sizes)."""
    if codebooks:
        return [cb.dim for cb in codebooks]
    return as_list(config.get("feat_dim"))


class TokenASRInference:
    """A trained model plus a head: text from features, for any head the model accepts.

    A dense soft head over one stream is embedded in one fused call straight from the features where that measured
    faster (:func:`~softtok.downstream.fused.fuses`; ``fused`` forces it on or off); a batch whose logits would
    overflow float32 in that call takes the two-step path.
    """

    def __init__(self, exp_dir: str, head: str = "hard", head_conf: Optional[Dict[str, Any]] = None,
                 search: str = "greedy", beam_size: int = 10, ctc_weight: Optional[float] = None,
                 checkpoint: str = "model.pth", device: str = "cpu", codebooks: Optional[List[Codebook]] = None,
                 fused: Optional[bool] = None):
        """``codebooks`` (one per source) replace the ones the config names (a bundle's own copies)."""
        if search not in SEARCHES:
            raise ValueError(f"unknown search {search!r}; choose from {SEARCHES}")
        self.model, self.config, self.tokenizer = load_trained(exp_dir, checkpoint, device)
        self.device = device
        discrete = self.config.get("n_tokens") is not None
        if discrete == (head == "continuous"):
            raise ValueError(f"head {head!r} does not fit a {'discrete' if discrete else 'continuous'} model "
                             f"({exp_dir})")
        kmeans = self.config.get("kmeans")
        if codebooks is None and kmeans:
            codebooks = [Codebook.load(p) for p in split_list(kmeans)]
        self.codebooks = codebooks if discrete else None
        self.source_dims = model_source_dims(self.config, self.codebooks)
        self.head_conf = with_dev_factor(exp_dir, head_conf)
        self.head = build_head(head, self.codebooks, self.source_dims, **self.head_conf)
        self.fused = fuses(self.head, device, fused)
        self._features = ContinuousHead(source_dims=self.source_dims)
        self.search, self.beam_size = search, beam_size
        self.ctc_weight = self.config["model"].get("ctc_weight", 0.3) if ctc_weight is None else ctc_weight
        self._beam = self._build_beam_search() if search == "beam" else None

    def fit_tau(self, data: TokenASRData) -> Dict[str, Any]:
        """A set-scope automatic τ measured on all of ``data``'s frames before decoding; the record of an automatic
        τ for decode.yaml (empty for other heads)."""
        auto = getattr(self.head, "auto", None)
        if auto is None:
            return {}
        if auto.scope == "set":
            frames = (torch.from_numpy(data.feats[u]) for u in tqdm(data.utts, desc="tau auto: median", unit="utt"))
            try:
                taus = self.head.fit_set(frames)
            except DegenerateTau as exc:
                raise DegenerateTau(f"{data.feats}: {exc}") from None
            logger.info("tau auto: τ = %s × the set's median nearest squared distance = %s", auto.factor, taus)
        return {"auto_tau": {"factor": auto.factor, "scope": auto.scope,
                             "tau": one_or_list(self.head.taus) if auto.scope == "set" else None}}

    def check_features(self, feats: str) -> None:
        """Refuse a feats.scp (comma list) whose stream count or feature specs differ from the model's."""
        scps = split_list(feats)
        if len(scps) != len(self.source_dims):
            raise ValueError(f"the model reads {len(self.source_dims)} feature streams, --feats gives {len(scps)}")
        for codebook, scp in zip(self.codebooks or [], scps):
            codebook.check_spec(feature_spec_of(scp), source=scp)

    def _build_beam_search(self):
        from espnet.nets.batch_beam_search import BatchBeamSearch
        from espnet.nets.scorers.ctc import CTCPrefixScorer

        model = self.model
        if model.decoder is None:
            raise ValueError("beam search needs the attention decoder (this model has ctc_weight=1)")
        scorers = {"decoder": model.decoder, "ctc": CTCPrefixScorer(model.ctc, model.eos)}
        weights = {"decoder": 1.0 - self.ctc_weight, "ctc": self.ctc_weight}
        return BatchBeamSearch(scorers=scorers, weights=weights, beam_size=self.beam_size,
                               vocab_size=model.vocab_size, sos=model.sos, eos=model.eos,
                               token_list=self.tokenizer.token_list, pre_beam_score_key="full").to(self.device).eval()

    def groups(self, data: TokenASRData, batch_frames: int = 20000) -> List[List[str]]:
        """How a set is decoded: length-sorted batches of at most ``batch_frames`` frames (greedy), one by one (beam)."""
        return data.batches(batch_frames) if self.search == "greedy" else [[u] for u in data.utts]

    def __call__(self, data: TokenASRData, groups: List[List[str]]) -> Dict[str, str]:
        """Hypotheses of every utterance in ``groups`` (batches for greedy, utterances for beam)."""
        hyps: Dict[str, str] = {}
        with logging_redirect_tqdm():
            for batch in self.stream(data, tqdm(groups, desc=f"decode {self.head.settings()} {self.search}",
                                                unit="batch")):
                hyps.update(batch)
        return hyps

    @torch.inference_mode()
    def stream(self, data: TokenASRData, groups: Iterable[List[str]]) -> Iterator[Dict[str, str]]:
        """The hypotheses of each group as soon as it is decoded."""
        for group in groups:
            utts, enc, enc_lens = self._encode(data, group)
            if self.search == "greedy":
                best = self.model.ctc.argmax(enc)
                yield {utt: self.tokenizer.decode([t for t in torch.unique_consecutive(best[i, :enc_lens[i]]).tolist()
                                                   if t != 0]) for i, utt in enumerate(utts)}
            else:
                yield {utt: self._beam_text(enc[i, :enc_lens[i]]) for i, utt in enumerate(utts)}

    def _encode(self, data: TokenASRData, group: List[str]) -> Tuple[List[str], torch.Tensor, torch.Tensor]:
        """(utts, encoder output, lengths) of one group: fused soft embedding when it applies, else head + model."""
        if self.fused:
            utts, feats, lengths, _, _ = data.collate(group, self._features, device=self.device)
            try:
                return (utts, *self.model.encode_soft_features(feats.feats, lengths, self.head.codebooks.sources[0],
                                                                self.head.taus[0]))
            except LogitOverflow:  # checked before any work: this batch takes the two-step path
                pass
        utts, tokens, lengths, _, _ = data.collate(group, self.head, device=self.device)
        return (utts, *self.model.encode(tokens, lengths))

    def _beam_text(self, enc: torch.Tensor) -> str:
        nbest = self._beam(enc, maxlenratio=0.0, minlenratio=0.0)
        return self.tokenizer.decode(nbest[0].yseq.tolist()) if nbest else ""


def with_dev_factor(exp_dir: str, head_conf: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Head options where ``tau: auto`` without a factor takes the model's dev f* (its tau_sweep.yaml)."""
    conf = dict(head_conf or {})
    if conf.get("tau") == "auto" and conf.get("tau_factor") is None:
        conf["tau_factor"] = dev_factor(exp_dir)
    return conf


def decode(exp_dir: str, feats: str, out_dir: str, text: Optional[str] = None, head: str = "hard",
           head_conf: Optional[Dict[str, Any]] = None, search: str = "greedy", beam_size: int = 10,
           batch_frames: int = 20000, ctc_weight: Optional[float] = None,
           device: Optional[str] = None) -> Dict[str, Any]:
    """Decode one set and score it when ``text`` is given; writes ``out_dir``."""
    inference = TokenASRInference(exp_dir, head, head_conf, search, beam_size, ctc_weight,
                                  device=device or default_device())
    inference.check_features(feats)
    data = TokenASRData(feats)
    auto = inference.fit_tau(data)
    groups = inference.groups(data, batch_frames)
    t0 = time.perf_counter()
    hyps = inference(data, groups)
    seconds = time.perf_counter() - t0
    out = Path(out_dir)
    result: Dict[str, Any] = {"utts": len(hyps), "seconds": round(seconds, 2)}
    if text is not None:
        refs = read_kaldi_map(Path(text))
        refs = {u: refs[u] for u in hyps} if set(hyps) <= set(refs) else refs
        result.update({k: v for k, v in write_score_dir(out, refs, hyps).items() if k in ("wer", "cer")})
    else:
        from softtok.tokenizers.datadir import write_kaldi_map

        write_kaldi_map(out / "hyp", hyps)
    save_yaml(out / "decode.yaml", {"exp_dir": str(exp_dir), "feats": str(feats), "head": head,
                                    "head_conf": inference.head_conf, "settings": inference.head.settings(), **auto,
                                    "search": search, "beam_size": beam_size, "ctc_weight": inference.ctc_weight,
                                    **result})
    return {**result, "output": str(out)}


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Decode with a trained token ASR model.")
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--feats", required=True)
    p.add_argument("--text", help="reference transcripts: score when given")
    add_head_args(p, auto_tau=True)
    p.add_argument("--search", default="greedy", choices=SEARCHES)
    p.add_argument("--beam-size", type=int_at_least(1), default=10)
    p.add_argument("--ctc-weight", type=float, help="joint decoding CTC weight (default: training's)")
    p.add_argument("--batch-frames", type=int_at_least(1), default=20000)
    p.add_argument("--device", help="cpu or cuda (default: cuda when visible)")
    p.add_argument("--out-dir", required=True)
    return p


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging()
    head_conf = head_conf_of(args)
    return run_job("decode", lambda: decode(args.exp_dir, args.feats, args.out_dir, args.text, args.head, head_conf,
                                            args.search, args.beam_size, args.batch_frames, args.ctc_weight,
                                            args.device), logger)


if __name__ == "__main__":
    raise SystemExit(main())
