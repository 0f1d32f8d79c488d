"""Tiny corpus trees in the real layouts (LibriSpeech, TED-LIUM 2, CHiME-4, L2-ARCTIC, ERJ, speechocean762,
LJSpeech, TIMIT), with short harmonic tones for audio, for the data-prep tests and the recipe smoke tests."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import soundfile as sf

from softtok.recipes.corpora.l2arctic import L2ARCTIC_SPEAKERS

WORDS = ["HELLO WORLD", "A CAT SAT", "THE DOG RAN HOME", "IT IS LATE", "GOOD MORNING", "SEE YOU SOON"]


def tone(seconds: float, sr: int = 16000, f0: float = 150.0) -> np.ndarray:
    """A speech-like harmonic tone with a slow pitch glide and amplitude wobble."""
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.2 * t)) / sr
    x = sum(0.2 / k * np.sin(k * phase) for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return x.astype(np.float32)


def _write(path: Path, seconds: float, i: int, sr: int = 16000, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, sr, 110.0 + 17.0 * (i % 9)), sr, format=fmt, subtype="PCM_16")
    return path


def write_sphere(path: Path, samples: np.ndarray, sr: int = 16000, coding: str = "pcm") -> Path:
    """A NIST SPHERE file written by hand: a 1024-byte ASCII header, then little-endian 16-bit samples."""
    pcm = np.clip(samples * 32767, -32768, 32767).astype("<i2")
    header = (f"NIST_1A\n   1024\nsample_count -i {len(pcm)}\nsample_rate -i {sr}\nchannel_count -i 1\n"
              f"sample_n_bytes -i 2\nsample_byte_format -s2 01\nsample_coding -s{len(coding)} {coding}\n"
              f"end_head\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.ljust(1024, b" ") + pcm.tobytes())
    return path


def make_librispeech(root: Path, per_subset: Dict[str, int] | None = None) -> Path:
    """``LibriSpeech/<subset>/<reader>/<chapter>/<reader>-<chapter>-<n>.flac`` + ``.trans.txt`` and SPEAKERS.TXT."""
    per_subset = per_subset or {"train-clean-100": 12, "dev-clean": 3, "dev-other": 3, "test-clean": 3,
                                "test-other": 3}
    corpus = root / "LibriSpeech"
    speakers = []
    for s_index, (subset, n) in enumerate(per_subset.items()):
        for i in range(n):
            reader, chapter = str(100 + 10 * s_index + i % 2), str(2000 + i % 4)
            folder = corpus / subset / reader / chapter
            utt = f"{reader}-{chapter}-{i:04d}"
            _write(folder / f"{utt}.flac", 0.6 + 0.1 * (i % 3), i, fmt="FLAC")
            with open(folder / f"{reader}-{chapter}.trans.txt", "a") as f:
                f.write(f"{utt} {WORDS[i % len(WORDS)]}\n")
            speakers.append(f"{reader:<5}| {'F' if int(reader) % 2 else 'M'} | {subset:<16} | 25.00 | Reader {reader}")
    (corpus / "SPEAKERS.TXT").write_text(";ID  |SEX| SUBSET | MINUTES | NAME\n" + "\n".join(sorted(set(speakers))) + "\n")
    return corpus


def make_tedlium2(root: Path, talks: int = 2) -> Path:
    """``TEDLIUM_release2/{dev,test}/{sph,stm}``: hand-written SPHERE talks with scored and ignored .stm lines."""
    corpus = root / "TEDLIUM_release2"
    for split in ("dev", "test"):
        for t in range(talks):
            talk = f"Speaker{t}_2010{split.upper()}"
            write_sphere(corpus / split / "sph" / f"{talk}.sph", tone(4.0, f0=120.0 + 30 * t))
            lines = [f"{talk} 1 {talk} 0.00 0.50 <o,f0,male> ignore_time_segment_in_scoring",
                     f"{talk} 1 {talk} 0.50 1.60 <o,f0,male> {{NOISE}} so it 's the(2) <unk> story",
                     f"{talk} 1 {talk} 1.60 2.80 <o,f0,male> we could n't see it",
                     f"{talk} 1 {talk} 2.80 4.20 <o,f0,male> the end"]  # ends past the audio: clipped to 4.0
            path = corpus / split / "stm" / f"{talk}.stm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
    return corpus


def make_chime4(root: Path, per_env: int = 2) -> Path:
    """``CHiME4/data/audio/16kHz/isolated_1ch_track/et05_<env>_<kind>/*.CH<n>.wav`` + ``transcriptions/*.dot_all``."""
    data = root / "CHiME4" / "data"
    for kind in ("real", "simu"):
        dot = []
        for e, env in enumerate(("bus", "caf", "ped", "str")):
            for i in range(per_env):
                key = f"F0{5 + i % 2}_44{e}C02{i:02d}_{env.upper()}"
                _write(data / "audio" / "16kHz" / "isolated_1ch_track" / f"et05_{env}_{kind}" / f"{key}.CH{1 + i}.wav",
                       0.7, i + e)
                dot.append(f"{WORDS[(i + e) % len(WORDS)].lower()} [door_slam] *word* ({key})")
        (data / "transcriptions").mkdir(parents=True, exist_ok=True)
        (data / "transcriptions" / f"et05_{kind}.dot_all").write_text("\n".join(dot) + "\n")
    return root / "CHiME4"


def make_l2arctic(root: Path, per_speaker: int = 1, speakers: List[str] | None = None) -> Path:
    """``l2arctic/<SPK>/wav/arctic_a000n.wav`` + ``<SPK>/transcript/arctic_a000n.txt`` for the 24 speakers."""
    corpus = root / "l2arctic"
    for s, spk in enumerate(speakers or sorted(L2ARCTIC_SPEAKERS)):
        for i in range(per_speaker):
            name = f"arctic_a{i + 1:04d}"
            _write(corpus / spk / "wav" / f"{name}.wav", 0.6, s + i, sr=44100)
            (corpus / spk / "transcript").mkdir(parents=True, exist_ok=True)
            (corpus / spk / "transcript" / f"{name}.txt").write_text(WORDS[(s + i) % len(WORDS)].capitalize())
    return corpus


def make_erj(root: Path, n: int = 4) -> Path:
    """An ERJ folder with the user-written ``softtok_erj.tsv`` manifest."""
    corpus = root / "ERJ"
    lines = ["# utt_id\tspeaker\taudio\tsentence\tgender"]
    for i in range(n):
        spk = f"JE{i % 2:02d}"
        _write(corpus / "wav" / spk / f"S{i:03d}.wav", 0.6, i)
        lines.append(f"{spk}_S{i:03d}\t{spk}\twav/{spk}/S{i:03d}.wav\t{WORDS[i % len(WORDS)]}\t{'mf'[i % 2]}")
    (corpus / "softtok_erj.tsv").write_text("\n".join(lines) + "\n")
    return corpus


def make_speechocean(root: Path, n: int = 4) -> Path:
    """``speechocean762/{train,test}/{wav.scp,text,utt2spk,spk2age,spk2gender}`` with ``WAVE/`` audio."""
    corpus = root / "speechocean762"
    for split in ("train", "test"):
        rows = []
        for i in range(n):
            spk = f"{split[:2]}{i % 2:02d}"
            utt = f"{spk}{i:04d}"
            _write(corpus / "WAVE" / f"SPEAKER{spk}" / f"{utt}.WAV", 0.6, i, fmt="WAV")
            rows.append((utt, f"WAVE/SPEAKER{spk}/{utt}.WAV", WORDS[i % len(WORDS)], spk))
        rows.sort()
        (corpus / split).mkdir(parents=True, exist_ok=True)
        (corpus / split / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p, _, _ in rows))
        (corpus / split / "text").write_text("".join(f"{u} {t}\n" for u, _, t, _ in rows))
        (corpus / split / "utt2spk").write_text("".join(f"{u} {s}\n" for u, _, _, s in rows))
        spks = sorted({s for *_, s in rows})
        (corpus / split / "spk2age").write_text("".join(f"{s} {10 + 10 * j}\n" for j, s in enumerate(spks)))
        (corpus / split / "spk2gender").write_text("".join(f"{s} {'mf'[j % 2]}\n" for j, s in enumerate(spks)))
    return corpus


def make_ljspeech(root: Path, n: int = 12) -> Path:
    """``LJSpeech-1.1/metadata.csv`` (id|text|normalized) and 22.05 kHz ``wavs/<id>.wav``."""
    corpus = root / "LJSpeech-1.1"
    lines = []
    for i in range(n):
        utt = f"LJ{1 + i // 5:03d}-{i % 5 + 1:04d}"
        _write(corpus / "wavs" / f"{utt}.wav", 0.7 + 0.05 * (i % 4), i, sr=22050)
        lines.append(f"{utt}|{WORDS[i % len(WORDS)].capitalize()}.|{WORDS[i % len(WORDS)].capitalize()}.")
    (corpus / "metadata.csv").write_text("\n".join(lines) + "\n")
    return corpus


def make_timit(root: Path) -> Path:
    """``TIMIT/TEST/DR1/<SPK>/<UTT>.WAV`` (hand-written SPHERE) + ``.TXT``, with the SA sentences to be skipped."""
    corpus = root / "TIMIT"
    for s, spk in enumerate(("FAKS0", "MDAB0")):
        for i, utt in enumerate(("SA1", "SI943", "SX13")):
            wave = tone(0.6, f0=120.0 + 40 * s + 10 * i)
            write_sphere(corpus / "TEST" / "DR1" / spk / f"{utt}.WAV", wave)
            (corpus / "TEST" / "DR1" / spk / f"{utt}.TXT").write_text(f"0 {len(wave)} {WORDS[i + s].capitalize()}.\n")
    return corpus


def tiny_hubert(path: Path) -> Path:
    """A randomly initialised 2-layer, 32-dim HuBERT in the Hugging Face format (as tests/test_ssl_features.py makes
    them), whose conv strides (5, 4, 4, 4) give the 50 Hz frames of the real models (hop 320 samples)."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, conv_dim=(32, 32, 32, 32), conv_kernel=(10, 8, 8, 8),
                                       conv_stride=(5, 4, 4, 4), num_conv_pos_embeddings=16,
                                       num_conv_pos_embedding_groups=4)
    transformers.HubertModel(config).eval().save_pretrained(path)
    return path
