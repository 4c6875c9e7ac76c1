"""Concurrent single-query encodes served as one batch.

A demo answering twenty users at once would otherwise run twenty one-row forward passes that fight for
two cores; one forward pass over twenty short queries costs a fraction of that. Requests queue up while
the model is busy and the next pass takes all of them (up to ``max_batch``): a lone query is encoded at
once, with no added wait, and under load the batches grow by themselves.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any

import numpy as np


class QueryBatcher:
    """Encodes queries for many threads through one worker thread and one model call per batch."""

    def __init__(self, embedder: Any, *, max_batch: int = 32) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.batches = 0
        self.encoded = 0
        self._requests: queue.SimpleQueue[tuple[str, Future]] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._serve, name=f"query-batcher-{id(self):x}", daemon=True)
        self._worker.start()

    def submit(self, text: str) -> Future:
        """A future of the query's vector: a caller searching with two models submits to both, then waits."""
        answer: Future = Future()
        self._requests.put((text, answer))
        return answer

    def encode_query(self, text: str, timeout: float | None = None) -> np.ndarray:
        """The query's vector (the model's query prompt applied), as ``embedder.encode_query`` gives it."""
        return self.submit(text).result(timeout)

    def _serve(self) -> None:
        while True:
            waiting = [self._requests.get()]
            while len(waiting) < self.max_batch:
                try:
                    waiting.append(self._requests.get_nowait())
                except queue.Empty:
                    break
            try:
                vectors = self.embedder.encode_query([text for text, _ in waiting])
            except Exception as exc:  # every caller of this batch gets the error, the worker lives on
                for _, answer in waiting:
                    answer.set_exception(exc)
                continue
            self.batches += 1
            self.encoded += len(waiting)
            for row, (_, answer) in enumerate(waiting):
                answer.set_result(vectors[row])
