"""The shared query encoder: concurrent queries answered from one model call, each with its own vector."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from core.embedders import load_embedder
from core.embedders.batching import QueryBatcher


class HeldFirstCall:
    """A real embedder whose first call waits until the test lets it go: the next requests queue meanwhile."""

    def __init__(self, embedder) -> None:
        self.embedder = embedder
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list[str]] = []

    def encode_query(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.entered.set()
            self.release.wait(60)
        return self.embedder.encode_query(texts)


def test_queries_that_arrive_while_the_model_is_busy_share_one_call_and_get_their_own_vectors(
        tiny_model_dir: Path) -> None:
    embedder = load_embedder(str(tiny_model_dir), device="cpu", cache=False)
    held = HeldFirstCall(embedder)
    batcher = QueryBatcher(held)
    first = batcher.submit("chimney pipe")
    assert held.entered.wait(60)
    texts = ["garden hose", "дымоход", "drill 18v", "paint white", "труба"]
    pending = [batcher.submit(text) for text in texts]
    held.release.set()
    vectors = [answer.result(60) for answer in pending]
    assert held.calls == [["chimney pipe"], texts]  # the five queued queries: one model call
    expected = embedder.encode_query(texts)
    for vector, direct in zip(vectors, expected, strict=True):
        np.testing.assert_allclose(vector, direct, atol=1e-5)
    np.testing.assert_allclose(first.result(60), embedder.encode_query("chimney pipe"), atol=1e-5)


def test_a_failing_batch_fails_its_callers_and_the_next_query_is_still_answered(tiny_model_dir: Path) -> None:
    embedder = load_embedder(str(tiny_model_dir), device="cpu", cache=False)

    class FailsOnce:
        failed = False

        def encode_query(self, texts: list[str]) -> np.ndarray:
            if not self.failed:
                self.failed = True
                raise RuntimeError("out of memory")
            return embedder.encode_query(texts)

    batcher = QueryBatcher(FailsOnce())
    with pytest.raises(RuntimeError, match="out of memory"):
        batcher.encode_query("chimney", timeout=60)
    np.testing.assert_allclose(batcher.encode_query("chimney", timeout=60), embedder.encode_query("chimney"),
                               atol=1e-5)
