"""Argument parsing of the analysis subcommands (phone-text, align, analyze); softtok.cli registers them."""

from __future__ import annotations

from typing import Any, Callable, Dict, List


def _add_phone_text(sub) -> None:
    p = sub.add_parser("phone-text", help="Kaldi text -> phone transcripts (utt PH PH ...)",
                       description="Phones of each utterance from speechocean762's resource/text-phone (per word), "
                                   "else resource/lexicon.txt (first pronunciation); stress digits dropped.")
    p.add_argument("--text", required=True, help="Kaldi text (utt WORD WORD ...)")
    p.add_argument("--text-phone", help="resource/text-phone (<utt>.<word> phones with _B/_I/_E/_S)")
    p.add_argument("--lexicon", help="resource/lexicon.txt (WORD PHONE ...)")
    p.add_argument("--keep-stress", action="store_true", help="keep stress digits (AH0, AH1, ...)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run_phone_text)


def _run_phone_text(args) -> Dict[str, Any]:
    from softtok.analysis.phones import write_phone_text

    return write_phone_text(args.text, args.out, args.text_phone, args.lexicon, args.keep_stress)


def _add_align(sub) -> None:
    p = sub.add_parser("align", help="phone CTC model + features -> frame-level phone labels",
                       description="CTC forced alignment (torchaudio) of each utterance's phones; writes "
                                   "OUT_DIR/phones.txt (one label per feature frame) and align.yaml (frame rates).")
    p.add_argument("--exp-dir", required=True, help="a phone CTC model (train config token_type: phone)")
    p.add_argument("--feats", required=True)
    p.add_argument("--phone-text", required=True, help="utt PH PH ... (softtok phone-text)")
    p.add_argument("--max-extend", type=float, default=0.2,
                   help="seconds of a blank run between two phones each phone may take (the rest is sil)")
    p.add_argument("--device")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=_run_align)


def _run_align(args) -> Dict[str, Any]:
    from softtok.analysis.align import align_set

    return align_set(args.exp_dir, args.feats, args.phone_text, args.out_dir, args.max_extend, args.device)


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="representation analysis tables (markdown + json + PNG)")
    kinds = p.add_subparsers(dest="analysis", required=True)
    t = kinds.add_parser("tokens", help="phone separability + RankMe of ASR inputs, purity/PNMI of tokens",
                         description="Hard E[id], soft Σ p_k E_k (τ* of each model's tau_sweep.yaml) and continuous "
                                     "inputs against frame phone labels; writes ANALYSIS.md, analysis.json, PNGs.")
    t.add_argument("--feats", required=True)
    t.add_argument("--labels", required=True, help="frame labels (softtok align's phones.txt)")
    t.add_argument("--models", nargs="*", default=[], help="hard-token ASR exp dirs (one per K)")
    t.add_argument("--taus", type=float, nargs="*", help="τ per model (default: each model's τ*)")
    t.add_argument("--continuous-model", help="continuous-input ASR exp dir (adds its W x + b input)")
    t.add_argument("--exclude", nargs="*", default=[], help="labels to leave out, e.g. sil")
    t.add_argument("--max-utts", type=int, help="an evenly spaced subset of utterances")
    t.add_argument("--commands", default="", help="command log to list in ANALYSIS.md")
    t.add_argument("--out-dir", required=True)
    t.set_defaults(func=_run_tokens)
    r = kinds.add_parser("rankme", help="RankMe per encoder layer (SSL or Whisper) or per dumped feats.scp",
                         description="Either --data-dir with --feature/--checkpoint (every layer in one pass) "
                                     "or --feats F1 F2 ...; writes RANKME.md, rankme.json, rankme.png.")
    r.add_argument("--data-dir")
    r.add_argument("--feature", help="an encoder feature (hubert, wavlm, wav2vec2, whisper); one without layers "
                                     "(mfcc, fbank) is skipped with a message")
    r.add_argument("--checkpoint", help="SSL checkpoint (required) or CTranslate2 Whisper dir (default: tiny.en)")
    r.add_argument("--layers", type=int, nargs="*", help="1-based layers (default: all)")
    r.add_argument("--feats", nargs="*", default=[])
    r.add_argument("--max-utts", type=int, default=200,
                   help="utterances (data dir: evenly spaced; feats: the first N); 0: all")
    r.add_argument("--device")
    r.add_argument("--commands", default="", help="command log to list in RANKME.md")
    r.add_argument("--out-dir", required=True)
    r.set_defaults(func=_run_rankme)


def _run_tokens(args) -> Dict[str, Any]:
    from softtok.analysis.report import write_tokens_report
    from softtok.analysis.tokens import analyze_tokens
    from softtok.reporting import read_commands

    result = analyze_tokens(args.feats, args.labels, args.models, args.continuous_model, args.taus, args.exclude,
                            args.max_utts)
    write_tokens_report(result, args.out_dir, read_commands(args.commands))
    summary = {"frames": result["frames"], "phones": result["phones"]}
    summary.update({f"pnmi_k{t['K']}": round(t["purity"]["hard"]["pnmi"], 4) for t in result["tokens"]})
    return {**summary, "output": f"{args.out_dir}/ANALYSIS.md"}


def _run_rankme(args) -> Dict[str, Any]:
    from softtok.analysis.layers import rankme_feats, rankme_layers
    from softtok.analysis.report import write_rankme_report
    from softtok.reporting import read_commands
    from softtok.tokenizers.features.base import has_layers

    if bool(args.feats) == bool(args.data_dir):
        raise ValueError("analyze rankme: give either --feats or --data-dir (with --feature and --checkpoint)")
    if args.data_dir:
        if args.feature and not has_layers(args.feature):
            return {"skipped": f"feature {args.feature!r} has no encoder layers (no RANKME.md)"}
        if not args.feature or (args.feature != "whisper" and not args.checkpoint):
            raise ValueError("analyze rankme --data-dir needs --feature (and --checkpoint unless whisper)")
        result = rankme_layers(args.data_dir, args.feature, args.checkpoint, args.layers, args.max_utts, args.device)
    else:
        result = rankme_feats(args.feats, args.max_utts)
    write_rankme_report(result, args.out_dir, read_commands(args.commands))
    best = max(result["rows"], key=lambda r: r["rankme"])
    return {"rows": len(result["rows"]), "best_rankme": round(best["rankme"], 2),
            "best_layer": best.get("layer"), "output": f"{args.out_dir}/RANKME.md"}


SUBCOMMANDS: List[Callable] = [_add_phone_text, _add_align, _add_analyze]
