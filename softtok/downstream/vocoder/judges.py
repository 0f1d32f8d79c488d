"""Judges of synthesised speech that share nothing with the tokens' Whisper encoder.

* :class:`PocketsphinxJudge` -- en-US transcripts from PocketSphinx 5 (its bundled continuous-HMM acoustic model,
  3-gram LM and CMUdict): a second intelligibility judge beside :class:`~.metrics.JudgeASR`, whose Whisper tiny.en
  encoder is the one the tokens are made from (and so flatters whatever that encoder keeps).
* :class:`DNSMOS` -- the non-intrusive naturalness predictor of the DNS challenge (Reddy et al. 2022): ITU-T P.835
  SIG (speech), BAK (background), OVRL (overall) and P.808 MOS, from the ONNX models of the ``speechmos`` wheel.

Both run offline on the CPU. Bad input (empty, 2-D, NaN, a rate other than 16 kHz) is one ``ValueError`` line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from softtok.downstream.vocoder.metrics import SAMPLE_RATE, Wave, check_wave

logger = logging.getLogger(__name__)

DNSMOS_KEYS = {"sig_mos": "dnsmos_sig", "bak_mos": "dnsmos_bak", "ovrl_mos": "dnsmos_ovrl", "p808_mos": "dnsmos_p808"}


def _missing(package: str, what: str) -> ImportError:
    return ImportError(f"{what} needs {package}: `pip install softtok[vocoder]`")


def clip_unit(x: np.ndarray, name: str) -> np.ndarray:
    """Samples clipped to [-1, 1], as writing 16-bit PCM would; how many were clipped is logged (debug)."""
    over = int(np.count_nonzero(np.abs(x) > 1.0))
    if over:
        logger.debug("%s: %d of %d samples outside [-1, 1] clipped", name, over, x.size)
    return np.clip(x, -1.0, 1.0)


def pcm16(wave: Wave, name: str = "wave", sr: int = SAMPLE_RATE) -> bytes:
    """A 16 kHz float waveform as little-endian int16 PCM bytes (clipped to [-1, 1], rounded)."""
    x = clip_unit(check_wave(wave, name, sr), name)
    return np.round(x * 32767.0).astype("<i2").tobytes()


class PocketsphinxJudge:
    """Intelligibility judge independent of Whisper: PocketSphinx 5's bundled en-US model, one utterance at a time.

    Cepstral mean normalisation is per utterance (``cmn batch``), so a transcript does not depend on which
    utterances were decoded before it. The decoder is single-threaded (it ignores ``--num-threads``).
    """

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder, get_model_path
        except ImportError:
            raise _missing("pocketsphinx", "PocketsphinxJudge") from None
        model = {"hmm": get_model_path("en-us/en-us"), "lm": get_model_path("en-us/en-us.lm.bin"),
                 "dict": get_model_path("en-us/cmudict-en-us.dict")}
        for key, path in model.items():
            if not Path(path).exists():
                raise FileNotFoundError(f"{path}: pocketsphinx's bundled en-US {key} not found")
        self.model = model
        self.decoder = Decoder(**model, samprate=SAMPLE_RATE, cmn="batch", logfn=os.devnull, loglevel="ERROR")

    def transcribe(self, waves: Sequence[Wave], sr: int = SAMPLE_RATE) -> List[str]:
        """Lower-case transcripts (words separated by one space; "" where nothing was recognised)."""
        audio = [pcm16(w, f"wave {i}", sr) for i, w in enumerate(waves)]  # every input checked before decoding
        return [self._decode(pcm) for pcm in audio]

    def _decode(self, pcm: bytes) -> str:
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, no_search=False, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return " ".join(hyp.hypstr.lower().split()) if hyp is not None else ""


class DNSMOS:
    """DNSMOS P.835 (SIG, BAK, OVRL; non-personalised) and P.808 MOS of 16 kHz speech, each on a 1-5 scale.

    The ``speechmos`` model reads 9.01 s windows a second apart and averages them; shorter audio is repeated
    (concatenated with itself) until it fills one window, as speechmos does. Samples outside [-1, 1] are clipped
    (not rescaled: DNSMOS hears level). ONNX Runtime uses ``num_threads`` (0: torch's thread count) intra-op threads.
    """

    def __init__(self, num_threads: int = 0):
        try:
            import onnxruntime
            from speechmos import dnsmos
        except ImportError:
            raise _missing("speechmos", "DNSMOS") from None
        models = Path(dnsmos.__file__).parent / "dnsmos_models"
        primary, p808 = models / "sig_bak_ovr.onnx", models / "model_v8.onnx"
        for path in (primary, p808):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: speechmos' DNSMOS model not found")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only

        def session(path: Path):
            return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        # speechmos' class without its __init__, which would open the sessions on all cores
        self.model = dnsmos.DNSMOS.__new__(dnsmos.DNSMOS)
        self.model.primary_model_path = str(primary)
        self.model.onnx_sess, self.model.p808_onnx_sess = session(primary), session(p808)
        self.threads = options.intra_op_num_threads

    def score(self, wave: Wave, sr: int = SAMPLE_RATE) -> Dict[str, float]:
        """``dnsmos_sig``, ``dnsmos_bak``, ``dnsmos_ovrl`` and ``dnsmos_p808`` of one waveform."""
        x = clip_unit(check_wave(wave, "wave", sr), "wave")
        raw = self.model(x, sr, False)
        return {key: float(raw[name]) for name, key in DNSMOS_KEYS.items()}
