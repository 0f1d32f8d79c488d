"""Ceiling rows of the vocoder tables: each set's natural audio through a mel → wave stage alone (no tokens), so a
vocoder's numbers can be read against what its mel → wave stage loses on its own.

    hifigan                  HiFi-GAN log-mel (22.05 kHz) → pretrained HiFi-GAN V1: the ceiling of ``conformer_mel``
    griffin_lim              the mel vocoder's 16 kHz log-mel → its Griffin-Lim (folder ``gl_oracle``, as before)
    hifigan_mel_griffin_lim  HiFi-GAN log-mel → Griffin-Lim (``conformer_mel --mel-to-wave griffin_lim``)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from softtok.downstream.vocoder import hifigan_mel
from softtok.tokenizers.audio import TARGET_SAMPLE_RATE, read_utterance, write_audio
from softtok.tokenizers.datadir import load_data_dir, write_kaldi_map

Resynthesis = Callable[[torch.Tensor], torch.Tensor]  # natural 16 kHz waveform -> the stage's waveform


@dataclass(frozen=True)
class Oracle:
    """A ceiling row: where it is written (``<reference dir>/<folder>/<set>``), its table title, its output rate and
    its stage (built on first use: a generator loads once)."""

    folder: str
    title: str
    sample_rate: int
    build: Callable[[], Resynthesis]


def _hifigan_mel_stage(name: str) -> Callable[[], Resynthesis]:
    """natural → HiFi-GAN log-mel → ``mel_to_wave(name)`` (22,050 Hz)."""
    def build() -> Resynthesis:
        to_wave = hifigan_mel.mel_to_wave(name)
        return lambda wave: to_wave(hifigan_mel.hifigan_log_mel(wave))
    return build


def _mel_vocoder_griffin_lim() -> Resynthesis:
    """natural → the mel vocoder's 16 kHz log-mel → its Griffin-Lim."""
    from softtok.downstream.vocoder.mel import griffin_lim, log_mel

    return lambda wave: griffin_lim(log_mel(wave))


ORACLES: Dict[str, Oracle] = {
    "hifigan": Oracle("hifigan_oracle", "HiFi-GAN from natural mels", hifigan_mel.SAMPLE_RATE,
                      _hifigan_mel_stage("hifigan")),
    "griffin_lim": Oracle("gl_oracle", "Griffin-Lim from natural 16 kHz mels", TARGET_SAMPLE_RATE,
                          _mel_vocoder_griffin_lim),
    "hifigan_mel_griffin_lim": Oracle("hifigan_mel_gl_oracle", "Griffin-Lim from natural HiFi-GAN mels",
                                      hifigan_mel.SAMPLE_RATE, _hifigan_mel_stage("griffin_lim")),
}
DEFAULT_ORACLES = ("hifigan",)


def oracle(name: str) -> Oracle:
    """The oracle called ``name``; an unknown name is a one-line error listing the known ones."""
    if name not in ORACLES:
        raise ValueError(f"unknown oracle {name!r}; choose from {', '.join(ORACLES)}")
    return ORACLES[name]


def mel_oracle(data_dir: str | Path, out_dir: Path, stage: Oracle) -> Path:
    """The references' own mel through ``stage`` at its rate: ``out_dir/wav/<utt>.wav`` and ``out_dir/wav.scp``
    (written last; wavs already there are kept, so an interrupted run resumes)."""
    if (out_dir / "wav.scp").is_file():
        return out_dir / "wav.scp"
    data = load_data_dir(data_dir)
    resynthesize = stage.build()
    wav_scp = {}
    with logging_redirect_tqdm():
        for utt in tqdm(data.utt_ids, desc=f"{stage.folder} {Path(data_dir).name}", unit="utt", mininterval=2.0):
            path = (out_dir / "wav" / f"{utt}.wav").resolve()
            if not path.is_file():
                write_audio(path, resynthesize(read_utterance(data, utt)), stage.sample_rate)
            wav_scp[utt] = str(path)
    write_kaldi_map(out_dir / "wav.scp", wav_scp)
    return out_dir / "wav.scp"
