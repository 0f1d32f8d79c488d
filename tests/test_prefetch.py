"""Batches made ahead in a thread (``prefetch_batches``): same items in the same order, errors surface,
early exits do not hang, and the three trainers train bit-identically with it on or off."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Dict, Iterator

import pytest
import torch

from softtok.common import prefetch
from softtok.downstream.asr import train as asr_train
from softtok.downstream.vocoder import hifigan as voc_hifigan
from softtok.downstream.vocoder import train as voc_train
from test_ddp_trainers import HIFIGAN_SMOKE, tiny  # noqa: F401  (fixture: ASR toy set)
from test_vocoder_mel import toy  # noqa: F401  (fixture: six 1 s utterances, codebook, config)


def test_items_in_order_made_ahead_by_a_thread():
    made = []

    def items() -> Iterator[int]:
        for i in range(6):
            made.append((i, threading.current_thread().name))
            yield i

    got = prefetch(items(), depth=2)
    assert next(got) == 0
    deadline = time.monotonic() + 5
    while len(made) < 4 and time.monotonic() < deadline:  # item 0 taken, 1-2 queued, 3 being put
        time.sleep(0.01)
    assert len(made) == 4 and {name for _, name in made} == {"prefetch"}
    assert list(got) == [1, 2, 3, 4, 5]
    assert list(prefetch(iter(range(5)), depth=0)) == list(range(5))


def test_error_while_making_an_item_is_raised_to_the_consumer():
    def items() -> Iterator[int]:
        yield 1
        raise ValueError("feats.scp: cannot read 'utt7'")

    got = prefetch(items(), depth=3)
    assert next(got) == 1
    with pytest.raises(ValueError, match="cannot read 'utt7'"):
        next(got)


def test_leaving_early_stops_the_thread():
    got = prefetch(iter(range(10 ** 9)), depth=2)
    assert next(got) == 0
    got.close()  # the consumer stops with the queue full: the producer must not wait forever
    assert not any(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())


def _weights(path: Path, key: str = "model") -> Dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state[key] if key in state else state


def _assert_same(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture
def depths(monkeypatch):
    """The depths the trainers ask prefetch for (so a test sees the config key reach it)."""
    from softtok.downstream import data as token_data

    asked = []

    def spy(items, depth):
        asked.append(depth)
        return prefetch(items, depth)

    for module in (token_data, voc_hifigan):
        monkeypatch.setattr(module, "prefetch", spy)
    return asked


def test_asr_trains_identically_with_prefetch(tiny, tmp_path, depths):  # noqa: F811
    for depth in (0, 2):
        asr_train.train(tiny["config"], tiny["train_feats"], tiny["train_text"], tiny["valid_feats"],
                        tiny["valid_text"], str(tmp_path / f"p{depth}"), kmeans=tiny["kmeans"],
                        overrides={"prefetch_batches": depth}, device="cpu")
    assert set(depths) == {0, 2}
    _assert_same(_weights(tmp_path / "p0" / "model.pth"), _weights(tmp_path / "p2" / "model.pth"))


def test_vocoders_train_identically_with_prefetch(toy, tmp_path, depths):  # noqa: F811
    for depth in (0, 2):
        voc_train.train(toy["config"], toy["feats"], toy["data"], str(tmp_path / f"mel{depth}"),
                        kmeans=toy["kmeans"], overrides={"max_epoch": 2, "prefetch_batches": depth}, device="cpu")
        voc_hifigan.train(str(HIFIGAN_SMOKE), toy["feats"], toy["data"], str(tmp_path / f"gan{depth}"),
                          kmeans=toy["kmeans"], overrides={"max_epoch": 1, "prefetch_batches": depth}, device="cpu")
    assert set(depths) == {0, 2}
    for name in ("mel", "gan"):
        _assert_same(_weights(tmp_path / f"{name}0" / "model.pth"), _weights(tmp_path / f"{name}2" / "model.pth"))
