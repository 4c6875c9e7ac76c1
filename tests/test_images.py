"""Images: the clip: embedder on a tiny open_clip model, image collections, workflow matching, bad images."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.embedders import ClipEmbedder, EmbeddingCache, load_embedder
from core.errors import CancelledError, ImageError, ModelLoadError
from core.images import MAX_IMAGE_SIDE, read_image
from core.progress import CancelToken
from tests.conftest import write_csv

WORKFLOWS = {"login": (30, 60, 200), "settings": (200, 40, 40), "checkout": (40, 180, 60)}


def screen(path: Path, colour: tuple[int, int, int], variant: int) -> Path:
    """A fake screenshot: a coloured frame with a few bars whose layout depends on ``variant``."""
    image = Image.new("RGB", (96, 64), (240, 240, 240))
    pixels = np.array(image)
    pixels[:10] = colour
    for bar in range(3):
        top = 16 + bar * 14
        pixels[top:top + 6, 8:8 + 20 + ((variant * 17 + bar * 29) % 60)] = colour
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture()
def screens(tmp_path: Path) -> Path:
    """A table of 9 screenshots (3 per workflow) beside their image folder."""
    folder = tmp_path / "data"
    (folder / "shots").mkdir(parents=True)
    rows = [["id", "image", "title", "workflow_id"]]
    for workflow, colour in WORKFLOWS.items():
        for variant in range(3):
            screen(folder / "shots" / f"{workflow}{variant}.png", colour, variant)
            rows.append([f"{workflow}-{variant}", f"shots/{workflow}{variant}.png", f"{workflow} screen {variant}",
                         workflow])
    return write_csv(folder / "screens.csv", rows)


@pytest.fixture()
def clip(tiny_clip_dir: Path) -> ClipEmbedder:
    return load_embedder(f"clip:{tiny_clip_dir}", device="cpu", cache=False)


# -- the embedder ---------------------------------------------------------------------------

def test_clip_folder_loads_through_load_embedder_and_both_towers_share_one_space(
        clip: ClipEmbedder, screens: Path, tiny_clip_dir: Path) -> None:
    assert isinstance(clip, ClipEmbedder)
    assert clip.dimension == 32 and clip.model_id == str(tiny_clip_dir.resolve())
    assert clip.spec == f"clip:{tiny_clip_dir.resolve()}"
    texts = clip.encode(["a login form", "settings page"])
    images = clip.encode_images([screens.parent / "shots" / "login0.png", screens.parent / "shots" / "settings0.png"])
    for vectors in (texts, images):
        assert vectors.shape == (2, 32) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert clip.encode("a login form").shape == (32,)
    assert clip.encode_images(screens.parent / "shots" / "login0.png").shape == (32,)
    # Text vectors come from the same model's text tower: the projection gives them the image space's size.
    expected = clip.model.encode_text(clip.tokenizer(["a login form"]), normalize=True).detach().numpy()[0]
    np.testing.assert_allclose(texts[0], expected, atol=1e-5)


def test_bgr_array_gives_the_same_vector_as_the_file(clip: ClipEmbedder, screens: Path) -> None:
    path = screens.parent / "shots" / "settings1.png"
    rgb = np.array(Image.open(path).convert("RGB"))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    from_file, from_bgr, from_pil, from_unflipped = clip.encode_images([path, bgr, Image.open(path), rgb])
    np.testing.assert_allclose(from_bgr, from_file, atol=1e-6)
    np.testing.assert_allclose(from_pil, from_file, atol=1e-6)
    assert not np.allclose(from_unflipped, from_file, atol=1e-4)  # channel order really matters here


def test_image_cache_hit_touches_neither_decoder_nor_model(tiny_clip_dir: Path, screens: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cache = EmbeddingCache(capacity=20)
    embedder = load_embedder(f"clip:{tiny_clip_dir}", device="cpu", cache=cache)
    paths = [screens.parent / "shots" / "login0.png", screens.parent / "shots" / "checkout2.png"]
    bgr = np.zeros((20, 30, 3), np.uint8)
    bgr[:, :, 0] = 255
    first = embedder.encode_images([*paths, bgr])
    text = embedder.encode(["a login form"])

    def forbidden(*_args, **_kwargs):
        raise AssertionError("the model was called for a cached input")

    monkeypatch.setattr(embedder.model, "encode_image", forbidden)
    monkeypatch.setattr(embedder.model, "encode_text", forbidden)
    monkeypatch.setattr("core.embedders.clip.read_image", forbidden)
    again = embedder.encode_images([bgr.copy(), paths[1], paths[0]])
    np.testing.assert_array_equal(again, first[::-1])
    np.testing.assert_array_equal(embedder.encode(["a login form"]), text)
    assert cache.stats().hits == 4


def test_image_batches_report_progress_and_cancel(clip: ClipEmbedder, screens: Path) -> None:
    paths = sorted((screens.parent / "shots").glob("*.png"))
    reports = []
    clip.encode_images(paths, batch_size=2, progress=reports.append)
    assert [r.done for r in reports] == [2, 4, 6, 8, 9] and reports[-1].task == "encode images"
    token = CancelToken()
    with pytest.raises(CancelledError, match="encode images was cancelled"):
        clip.encode_images(paths, batch_size=2, progress=lambda _p: token.cancel(), cancel=token)


def test_huge_image_is_downscaled_not_a_crash(clip: ClipEmbedder, tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    Image.new("RGB", (10_000, 10_000), (12, 34, 56)).save(path)
    image = read_image(path)
    assert max(image.size) == MAX_IMAGE_SIDE and image.mode == "RGB"
    assert clip.encode_images(path).shape == (32,)


def test_empty_in_memory_images_are_refused_in_one_line(clip: ClipEmbedder) -> None:
    with pytest.raises(ImageError, match=r"image #1 \(ndarray\) is empty \(0×0 pixels\)"):
        clip.encode_images([np.zeros((4, 4, 3), np.uint8), np.zeros((0, 0, 3), np.uint8)])
    with pytest.raises(ImageError, match="is empty"):
        read_image(Image.new("RGB", (0, 0)))
    with pytest.raises(ImageError, match="dtype float32: give uint8"):
        read_image(np.zeros((4, 4, 3), np.float32))


def test_clip_spec_errors_are_one_line_and_never_fall_back(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_embedder(f"clip:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not an open_clip model folder"):
        load_embedder(f"clip:{tmp_path / 'empty'}")
    with pytest.raises(ModelLoadError, match=r"names no weights.*clip:ViT-B-32/TAG \(tags: openai"):
        load_embedder("clip:ViT-B-32")
    with pytest.raises(ModelLoadError, match="no architecture 'NoSuchNet'"):
        load_embedder("clip:NoSuchNet/openai")
    # Offline (HF_HUB_OFFLINE=1 in conftest): a hub model fails at once, naming the local-folder way out.
    with pytest.raises(ModelLoadError, match=r"not reachable.*clip:/path/to/folder"):
        load_embedder("clip:ViT-B-32/openai", fallback=True)


# -- image collections, search and matching -------------------------------------------------

@pytest.fixture()
def indexed_screens(run_cli, screens: Path, tiny_clip_dir: Path) -> Path:
    result = run_cli("index", str(screens), "--collection", "screens", "--image-column", "image", "--id-column", "id",
                     "--text-column", "title", "--model", f"clip:{tiny_clip_dir}", "--device", "cpu")
    assert result.code == 0, result.err
    assert "indexed 9 items into 'screens'" in result.out
    return screens


def _open(name: str = "screens"):
    from core.collection.named import open_collection
    from storage.db import Database
    from storage.workspace import Workspace

    workspace = Workspace.open()
    return open_collection(name, workspace=workspace, db=Database(workspace.db_url()))


def test_image_collection_keeps_metadata_and_searches_by_image(indexed_screens: Path, run_cli) -> None:
    result = run_cli("search", "screens", "--image", str(indexed_screens.parent / "shots" / "checkout1.png"),
                     "-k", "3", "--json")
    assert result.code == 0, result.err
    import json

    hits = json.loads(result.out)
    assert hits[0]["id"] == "checkout-1" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["metadata"]["workflow_id"] == "checkout"
    assert hits[0]["metadata"]["image_path"] == str((indexed_screens.parent / "shots" / "checkout1.png").resolve())
    collection = _open()
    assert collection.item("login-2")["text"] == "login screen 2"


def test_text_query_on_an_image_collection_uses_the_text_tower(indexed_screens: Path, run_cli) -> None:
    collection = _open()
    query = collection.embedder.encode(["a login form"])[0]
    expected = np.sort(collection.vectors @ query)[::-1][:3]
    result = run_cli("search", "screens", "a login form", "-k", "3", "--json")
    assert result.code == 0, result.err
    import json

    scores = [hit["score"] for hit in json.loads(result.out)]
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_match_returns_best_score_per_workflow_and_confidence(indexed_screens: Path) -> None:
    from core.matching import DEFAULT_MATCH_THRESHOLD, match

    collection = _open()
    shot = indexed_screens.parent / "shots" / "settings2.png"
    result = match(collection, shot, k=3, threshold=0.999)
    assert result.matches[0].workflow_id == "settings"
    assert result.best.item_id == "settings-2" and result.confident
    assert len({m.workflow_id for m in result.matches}) == 3
    query = collection.embedder.encode_images(shot)
    for found in result.matches:
        members = [i for i, item_id in enumerate(collection.ids) if item_id.startswith(found.workflow_id + "-")]
        assert found.score == pytest.approx(float(np.max(collection.vectors[members] @ query)), abs=1e-5)
        assert found.hits == 3
    assert [m.score for m in result.matches] == sorted((m.score for m in result.matches), reverse=True)
    # A new screenshot of no stored screen cannot reach a cosine of 1: not confident.
    other = screen(indexed_screens.parent / "new.png", (128, 128, 0), 7)
    assert not match(collection, other, k=1, threshold=1.0).confident
    assert 0 < DEFAULT_MATCH_THRESHOLD < 1
    assert result.to_dict()["best"]["workflow_id"] == "settings"


def test_match_cli_prints_workflows_and_confidence(indexed_screens: Path, run_cli) -> None:
    result = run_cli("match", "screens", str(indexed_screens.parent / "shots" / "login1.png"), "--threshold", "0.999")
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert "workflow_id=login" in lines[0] and lines[-1].startswith("confident")


def _one_line_error(result) -> str:
    assert result.code != 0
    lines = [line for line in result.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    return lines[0]


def _zero_by_zero_png(path: Path) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(("case", "expected"), [
    ("missing", "does not exist"),
    ("not_an_image", "is not an image PIL can read"),
    ("truncated", "is truncated or corrupted"),
    ("zero", "0×0"),
])
def test_every_bad_image_is_one_line_naming_row_and_file(case: str, expected: str, screens: Path, run_cli,
                                                         tiny_clip_dir: Path) -> None:
    bad = screens.parent / "shots" / "checkout1.png"
    if case == "missing":
        bad.unlink()
    elif case == "not_an_image":
        bad.write_text("these are notes, not pixels")
    elif case == "truncated":
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        _zero_by_zero_png(bad)
    result = run_cli("index", str(screens), "--collection", "broken", "--image-column", "image",
                     "--model", f"clip:{tiny_clip_dir}", "--device", "cpu")
    line = _one_line_error(result)
    assert "row 8" in line and str(bad.resolve()) in line and expected in line
    assert not (Path.cwd() / "broken").exists()


def test_image_column_with_a_text_model_is_refused(screens: Path, run_cli, tiny_model_dir: Path) -> None:
    result = run_cli("index", str(screens), "--collection", "x", "--image-column", "image",
                     "--model", str(tiny_model_dir))
    assert "needs an image model" in _one_line_error(result)


def test_search_by_image_on_a_text_collection_is_refused(tmp_path: Path, run_cli, tiny_model_dir: Path,
                                                         screens: Path) -> None:
    items = write_csv(tmp_path / "items.csv", [["id", "name"], ["1", "chimney pipe"], ["2", "garden hose"]])
    assert run_cli("index", str(items), "--collection", "shop", "--text-column", "name", "--id-column", "id",
                   "--model", str(tiny_model_dir)).code == 0
    result = run_cli("search", "shop", "--image", str(screens.parent / "shots" / "login0.png"))
    assert "search it by text" in _one_line_error(result)
