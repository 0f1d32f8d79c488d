"""A bundle loaded for inference: audio → featurizers → head (hard | soft τ | continuous) → model → text or wave.

    m = softtok.load("bundles/asr_hard_k128")
    m.transcribe(["a.wav", "b.flac"], head="soft")           # τ*: the bundle's dev choice
    m.transcribe([wave], sample_rate=8000, head="soft", tau=2.0)
    tokens = m.tokens(wave, 16000, head="soft")              # the TokenInput, for your own model

Transcription goes through the recipes' decoder (:class:`~softtok.downstream.asr.decode.TokenASRInference`, its
length-sorted batches and search), so for one model, head and τ it gives the recipe's hypotheses.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from softtok.adapters import adapter
from softtok.common import default_device, positive_int
from softtok.downstream.asr.data import TokenASRData
from softtok.downstream.asr.decode import TokenASRInference
from softtok.downstream.data import ArrayFeatures, pad_token_inputs
from softtok.inference.bundle import Bundle, BundleError, read_bundle
from softtok.tokenizers.audio import TARGET_SAMPLE_RATE, resample
from softtok.tokenizers.features.base import Featurizer, build_featurizer
from softtok.tokenizers.fileio import load_yaml
from softtok.tokenizers.heads import Head, TokenInput, build_head
from softtok.tokenizers.streams import stack_sources
from softtok.tokenizers.tau import Tau, taus_of

logger = logging.getLogger(__name__)

Audio = Union[str, Path, np.ndarray, torch.Tensor]


class SoftTokenModel:
    """What ASR and vocoder bundles share: the featurizer of each source, the codebooks, the heads and τ."""

    def __init__(self, bundle: Bundle, device: Optional[str] = None, checkpoints: Optional[Sequence[str]] = None):
        self.bundle, self.device = bundle, device or default_device()
        self.codebooks = bundle.codebooks()
        overrides = list(checkpoints or []) + [None] * len(bundle.sources)
        self.featurizers = [self._featurizer(i, overrides[i]) for i in range(len(bundle.sources))]
        self.source_dims = [f.dim for f in self.featurizers]

    def _featurizer(self, i: int, checkpoint: Optional[str]) -> Featurizer:
        source = self.bundle.sources[i]
        featurizer = build_featurizer(source["name"], checkpoint=self.bundle.checkpoint(i, checkpoint),
                                      layer=source.get("layer"), device=self.device, **source.get("options", {}))
        if featurizer.dim != source["dim"]:
            raise BundleError(f"{self.bundle.path}: source {i + 1} gives {featurizer.dim}-dim features, the model "
                              f"was trained on {source['dim']}")
        return featurizer

    @property
    def model_format(self) -> str:
        """``softtok`` for a model trained here, else the adapter of the toolkit it was trained in."""
        return self.bundle.spec["model"].get("format", "softtok")

    @property
    def default_head(self) -> Dict[str, Any]:
        return self.bundle.spec["head"]

    def head(self, name: Optional[str] = None, tau: Optional[Tau] = None, tau_factor: Optional[float] = None,
             top_k: Optional[int] = None) -> Head:
        """A head for this model: default the bundle's (soft at τ*); ``tau_factor`` × the bundle's τ scale."""
        name, codebooks, conf = self.head_args(name, tau, tau_factor, top_k)
        return build_head(name, codebooks, self.source_dims, **conf)

    def head_args(self, name: Optional[str] = None, tau: Optional[Tau] = None, tau_factor: Optional[float] = None,
                  top_k: Optional[int] = None) -> Tuple[str, Any, Dict[str, Any]]:
        """(head name, codebooks, head options) for the given settings, defaults from the bundle (a τ, τ factor or
        top-k given without a head means soft)."""
        default = self.default_head
        soft_settings = tau is not None or tau_factor is not None or top_k is not None
        name = name or ("soft" if soft_settings else default["name"])
        if tau is not None and tau_factor is not None:
            raise ValueError("give tau or tau_factor, not both")
        if name == "soft" and tau is None:
            if tau_factor is not None:
                if "scale" not in default:
                    raise BundleError(f"{self.bundle.path}: no τ scale recorded (no dev sweep); give tau")
                scales = default["scale"] if isinstance(default["scale"], list) else [default["scale"]]
                tau = taus_of(tau_factor, scales)
            elif "tau" in default:
                tau = default["tau"]
            else:
                raise BundleError(f"{self.bundle.path}: no τ* recorded (no dev sweep); give tau or tau_factor")
        conf = {"tau": tau if name == "soft" else None, "top_k": top_k}
        return name, (self.codebooks if name != "continuous" else None), {k: v for k, v in conf.items() if v is not None}

    def features(self, wave: Audio, sample_rate: Optional[int] = None, key: str = "input") -> np.ndarray:
        """(T, Σ D_i) float32 features of one waveform (a path, or an array at ``sample_rate``)."""
        wave = read_wave(wave, sample_rate, key)
        with torch.inference_mode():  # as dump-features computes them: a CPU wave in, float32 frames out
            mats = [f(wave).detach().float().cpu().numpy() for f in self.featurizers]
        for mat in mats:
            if mat.ndim != 2 or len(mat) == 0:
                raise ValueError(f"{key}: too short for {self.featurizers[0].name} features ({len(wave)} samples)")
        return stack_sources(mats, [s["name"] for s in self.bundle.sources], key)

    def tokens(self, wave: Audio, sample_rate: Optional[int] = None, head: Optional[str] = None,
               tau: Optional[Tau] = None, tau_factor: Optional[float] = None, top_k: Optional[int] = None) -> TokenInput:
        """The TokenInput (T, S, …) a head makes of one waveform: what the model would embed."""
        feats = torch.from_numpy(self.features(wave, sample_rate))
        return self.head(head, tau, tau_factor, top_k)(feats.to(self.device))


def read_wave(wave: Audio, sample_rate: Optional[int], key: str) -> torch.Tensor:
    """A path read and resampled to 16 kHz, or an array at ``sample_rate`` resampled (mono float32)."""
    from softtok.inference.inputs import collect_inputs

    if isinstance(wave, (str, Path)):
        return collect_inputs([str(wave)])[0].read(TARGET_SAMPLE_RATE)
    if sample_rate is None:
        raise ValueError(f"{key}: an array needs its sample_rate")
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32) if isinstance(wave, np.ndarray) else wave).float()
    if x.ndim != 1 or x.numel() == 0 or not torch.isfinite(x).all():
        raise ValueError(f"{key}: expected a non-empty, finite mono 1-D waveform, got shape {tuple(x.shape)}")
    return resample(x, positive_int(sample_rate, f"{key}: sample_rate"), TARGET_SAMPLE_RATE)


class ASRModel(SoftTokenModel):
    """An ASR bundle: text of audio with any head the model accepts."""

    def __init__(self, bundle: Bundle, device: Optional[str] = None, checkpoints: Optional[Sequence[str]] = None):
        super().__init__(bundle, device, checkpoints)
        self.config = load_yaml(bundle.file("config.yaml")) if self.model_format == "softtok" else {}
        self._decoders: Dict[Tuple, Any] = {}

    @property
    def max_frames(self) -> int:
        """The longest utterance training kept (frames): longer audio is cut into windows of at most this."""
        return int(self.bundle.spec["model"].get("max_frames") or self.config.get("max_utt_frames") or 1500)

    def decoder(self, head: Optional[str] = None, tau: Optional[Tau] = None, tau_factor: Optional[float] = None,
                top_k: Optional[int] = None, search: str = "greedy", fused: Optional[bool] = None) -> TokenASRInference:
        """The recipes' decoder for these settings (built once per setting); ``fused``: see TokenASRInference."""
        name, codebooks, conf = self.head_args(head, tau, tau_factor, top_k)
        key = (name, repr(conf), search, fused)
        if key in self._decoders:
            return self._decoders[key]
        if self.model_format == "softtok":
            decoder = TokenASRInference(str(self.bundle.path), name, conf, search, device=self.device,
                                        codebooks=codebooks, fused=fused)
        else:  # a model of another toolkit: its adapter decodes, with the head built here
            decoder = adapter(self.model_format).load_decoder(
                self.bundle.path, self.bundle.spec, build_head(name, codebooks, self.source_dims, **conf), search,
                self.device)
        self._decoders[key] = decoder
        return decoder

    def window_features(self, wave: torch.Tensor, key: str) -> Dict[str, np.ndarray]:
        """Features of a 16 kHz wave cut into windows (:func:`split_windows`), in order: ``{key: feats}`` for one
        window, ``{key#000: ..., key#001: ...}`` for several."""
        parts = split_windows(wave, self.max_frames)
        keys = [key] if len(parts) == 1 else [f"{key}#{j:03d}" for j in range(len(parts))]
        return {k: self.features(part, TARGET_SAMPLE_RATE, key) for k, part in zip(keys, parts)}

    def decode_features(self, feats: Dict[str, np.ndarray], head: Optional[str] = None, tau: Optional[Tau] = None,
                        tau_factor: Optional[float] = None, top_k: Optional[int] = None, search: str = "greedy",
                        batch_frames: int = 20000, fused: Optional[bool] = None) -> Iterator[Dict[str, str]]:
        """Hypotheses of in-memory features, a batch at a time, as the recipe's decode stage batches them."""
        decoder = self.decoder(head, tau, tau_factor, top_k, search, fused)
        data = TokenASRData(ArrayFeatures(feats, self.source_dims))
        return decoder.stream(data, decoder.groups(data, batch_frames))

    def transcribe(self, inputs: Sequence[Audio], sample_rate: Optional[int] = None, head: Optional[str] = None,
                   tau: Optional[Tau] = None, tau_factor: Optional[float] = None, top_k: Optional[int] = None,
                   search: str = "greedy", fused: Optional[bool] = None) -> List[str]:
        """The text of each input (paths, or arrays at ``sample_rate``), long audio cut into windows and joined;
        ``fused``: see TokenASRInference (default: where it measured faster)."""
        feats: Dict[str, np.ndarray] = {}
        windows: List[List[str]] = []
        for i, wave in enumerate(inputs):
            parts = self.window_features(read_wave(wave, sample_rate, f"input {i}"), f"{i:08d}")
            feats.update(parts)
            windows.append(list(parts))
        hyps: Dict[str, str] = {}
        for batch in self.decode_features(feats, head, tau, tau_factor, top_k, search, fused=fused):
            hyps.update(batch)
        return [" ".join(h for h in (hyps[k] for k in keys) if h) for keys in windows]


class VocoderModel(SoftTokenModel):
    """A vocoder bundle: 16 kHz speech in the target voice from any audio, with any head the model accepts."""

    def __init__(self, bundle: Bundle, device: Optional[str] = None, checkpoints: Optional[Sequence[str]] = None):
        super().__init__(bundle, device, checkpoints)
        if self.model_format == "softtok":
            vocoder = load_yaml(bundle.file("config.yaml"))["vocoder"]
            module = importlib.import_module(f"softtok.downstream.vocoder.{vocoder}")
            self.render, self.config = module.load_renderer(str(bundle.path), self.device)
        else:
            self.render, self.config = adapter(self.model_format).load_renderer(bundle.path, bundle.spec, self.device)
        self.sample_rate = int(self.config.get("sample_rate") or TARGET_SAMPLE_RATE)

    def resynthesize(self, inputs: Sequence[Audio], sample_rate: Optional[int] = None, head: Optional[str] = None,
                     tau: Optional[Tau] = None, tau_factor: Optional[float] = None,
                     top_k: Optional[int] = None) -> List[np.ndarray]:
        """Float32 waves (at ``self.sample_rate``: 16 kHz for softtok's vocoders) of each input through the head
        and the vocoder."""
        the_head = self.head(head, tau, tau_factor, top_k)
        return [self.wave_of(wave, the_head, sample_rate, f"input {i}") for i, wave in enumerate(inputs)]

    def wave_of(self, wave: Audio, head: Head, sample_rate: Optional[int] = None, key: str = "input") -> np.ndarray:
        """One input through a built head and the vocoder: a float32 wave at ``self.sample_rate``."""
        feats = torch.from_numpy(self.features(wave, sample_rate, key)).to(self.device)
        tokens, lengths = pad_token_inputs([head(feats)])
        return self.render(tokens, lengths.to(self.device)).detach().cpu().numpy()


def split_windows(wave: torch.Tensor, max_frames: int, frame_rate: float = 50.0,
                  sample_rate: int = TARGET_SAMPLE_RATE, search_s: float = 2.0) -> List[torch.Tensor]:
    """``wave`` cut into windows of at most ``max_frames`` feature frames, each cut at the quietest 20 ms of the
    last ``search_s`` seconds before the limit (a pause, not the middle of a word)."""
    limit = int(max_frames / frame_rate * sample_rate)
    hop = int(sample_rate / frame_rate)
    parts, start = [], 0
    while len(wave) - start > limit:
        lo = start + max(hop, limit - int(search_s * sample_rate))
        frames = wave[lo:start + limit].unfold(0, hop, hop)
        cut = lo + int(frames.pow(2).mean(1).argmin()) * hop
        parts.append(wave[start:cut])
        start = cut
    return parts + [wave[start:]]


def load(path: str | Path, device: Optional[str] = None,
         checkpoints: Optional[Sequence[str]] = None) -> Union[ASRModel, VocoderModel]:
    """A bundle (``softtok export``) ready to run; ``checkpoints``: the featurizer checkpoint of each source where it
    no longer lies where the bundle records it (checked against its sha256)."""
    bundle = read_bundle(path)
    return (ASRModel if bundle.kind == "asr" else VocoderModel)(bundle, device, checkpoints)
