"""load_embedder and the text embedder, on a tiny model built in the test."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from core.embedders import EmbeddingCache, load_embedder, resolve_spec
from core.errors import CancelledError, EmbtuneError, ModelLoadError
from core.progress import CancelToken


def test_local_folder_loads_and_vectors_are_normalised(tiny_model_dir: Path) -> None:
    embedder = load_embedder(str(tiny_model_dir), device="cpu", cache=False)
    vectors = embedder.encode(["chimney pipe", "garden hose", "труба"])
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    assert embedder.dimension == 32
    assert embedder.model_id == str(tiny_model_dir.resolve())
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    single = embedder.encode("chimney pipe")
    assert single.shape == (32,)
    np.testing.assert_allclose(single, vectors[0], atol=1e-5)


def test_truncate_dim_cuts_and_renormalises(tiny_model_dir: Path) -> None:
    full = load_embedder(str(tiny_model_dir), device="cpu", cache=False)
    small = load_embedder(str(tiny_model_dir), device="cpu", truncate_dim=8, cache=False)
    vector = small.encode("chimney")
    assert small.dimension == 8 and vector.shape == (8,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    expected = full.model.encode(["chimney"])[0][:8]
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=1e-5)


def test_truncate_dim_larger_than_model_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(EmbtuneError, match=r"truncate_dim 64 .*1\.\.32"):
        load_embedder(str(tiny_model_dir), device="cpu", truncate_dim=64)


def test_missing_local_path_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_embedder(str(tmp_path / "no-such-model"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_embedder("./models/also/missing")


def test_folder_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="not a model folder"):
        load_embedder(str(tmp_path))


def test_hub_id_that_cannot_load_falls_back_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        embedder = load_embedder("someone/not-a-real-model-xyz", device="cpu")
        again = load_embedder("someone/not-a-real-model-xyz", device="cpu")
    assert embedder.fell_back and again.fell_back
    assert embedder.model_id == "intfloat/multilingual-e5-small" and embedder.spec == "default"
    warnings = [r for r in caplog.records if "someone/not-a-real-model-xyz" in r.getMessage()]
    assert len(warnings) == 1
    assert "fallback model intfloat/multilingual-e5-small" in warnings[0].getMessage()


def test_fallback_can_be_disabled() -> None:
    with pytest.raises(ModelLoadError, match="someone/not-a-real-model-xyz"):
        load_embedder("someone/not-a-real-model-xyz", fallback=False)


def test_known_hub_id_resolves_to_the_bundled_package() -> None:
    resolved = resolve_spec("sentence-transformers/all-MiniLM-L6-v2")
    assert resolved.kind == "bundled"
    assert (Path(resolved.location) / "model.safetensors").exists()


def test_cache_hit_does_not_touch_the_model(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = EmbeddingCache(capacity=10)
    embedder = load_embedder(str(tiny_model_dir), device="cpu", cache=cache)
    first = embedder.encode(["chimney", "pipe"])

    def forbidden(*_args, **_kwargs):
        raise AssertionError("the model was called for a cached text")

    monkeypatch.setattr(embedder.model, "encode", forbidden)
    second = embedder.encode(["pipe", "chimney"])
    np.testing.assert_array_equal(second, first[::-1])
    assert cache.stats().hits == 2 and cache.stats().misses == 2


def test_only_missing_texts_reach_the_model(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = load_embedder(str(tiny_model_dir), device="cpu", cache=EmbeddingCache(10))
    embedder.encode(["chimney"])
    seen: list[list[str]] = []
    original = embedder.model.encode

    def recording(texts, **kwargs):
        seen.append(list(texts))
        return original(texts, **kwargs)

    monkeypatch.setattr(embedder.model, "encode", recording)
    embedder.encode(["chimney", "garden hose"])
    assert seen == [["garden hose"]]


def test_fingerprint_follows_weights_not_name(tiny_model_dir: Path, tiny_model_dir_48: Path) -> None:
    import torch

    first = load_embedder(str(tiny_model_dir), device="cpu", reuse=False)
    copy = load_embedder(str(tiny_model_dir), device="cpu", reuse=False)
    other = load_embedder(str(tiny_model_dir_48), device="cpu", reuse=False)
    assert first.fingerprint == copy.fingerprint != other.fingerprint
    with torch.no_grad():
        next(copy.model.parameters()).add_(0.01)
    copy._fingerprint = None
    assert copy.fingerprint != first.fingerprint


def test_fine_tuned_weights_never_reuse_base_cache_entries(tiny_model_dir: Path) -> None:
    import torch

    cache = EmbeddingCache(capacity=10)
    base = load_embedder(str(tiny_model_dir), device="cpu", cache=cache, reuse=False)
    tuned = load_embedder(str(tiny_model_dir), device="cpu", cache=cache, reuse=False)
    with torch.no_grad():
        for parameter in tuned.model.parameters():
            parameter.mul_(1.5)
    base.encode("chimney")
    tuned.encode("chimney")
    assert cache.stats().hits == 0 and cache.stats().size == 2


def test_progress_reports_and_cancel_stops_encoding(tiny_model_dir: Path) -> None:
    embedder = load_embedder(str(tiny_model_dir), device="cpu", cache=False, batch_size=4)
    texts = [f"item {i}" for i in range(300)]
    reports = []
    embedder.encode(texts, progress=reports.append)
    assert reports[-1].done == 300 and reports[-1].total == 300
    assert [r.done for r in reports] == sorted(r.done for r in reports)

    token = CancelToken()

    def cancel_after_first(progress) -> None:
        token.cancel()

    with pytest.raises(CancelledError, match="encode was cancelled"):
        embedder.encode(texts, progress=cancel_after_first, cancel=token)


def test_non_text_input_names_its_position(tiny_model_dir: Path) -> None:
    embedder = load_embedder(str(tiny_model_dir), device="cpu")
    with pytest.raises(EmbtuneError, match="text #1 is int"):
        embedder.encode(["ok", 5])  # type: ignore[list-item]


def test_auto_device_is_cpu_without_accelerator(tiny_model_dir: Path) -> None:
    import torch

    embedder = load_embedder(str(tiny_model_dir))
    assert embedder.device.startswith("cuda" if torch.cuda.is_available() else "cpu")


def test_unknown_device_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(EmbtuneError, match="device 'tpu' is unknown"):
        load_embedder(str(tiny_model_dir), device="tpu")
