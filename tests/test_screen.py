"""The offline screenshot embedder (screen:default): real tesseract on generated screens, real bundled text model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.embedders import EmbeddingCache, load_embedder
from core.embedders.screen import LAYOUT_DIM, ScreenEmbedder
from core.errors import ModelLoadError
from core.screens import render_screen
from core.screens.ocr import clear_shared_ocr_memory
from tests.conftest import write_csv

pytestmark = pytest.mark.integration

# Variant 0 is English/light, 2 Russian/light, 4 French/dark (see core.screens).
SHOTS = {"login": 0, "file_save": 0, "checkout": 0, "calendar_event": 0}


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("screens")
    rows = [["image", "workflow_id"]]
    for workflow, variant in SHOTS.items():
        image, _ = render_screen(workflow, variant)
        image.save(folder / f"{workflow}.png")
        rows.append([f"{workflow}.png", workflow])
    render_screen("login", 2)[0].save(folder / "login-ru.png")
    render_screen("login", 9)[0].save(folder / "login-dark.png")  # English, dark: a variant not indexed
    Image.new("RGB", (900, 600), (250, 250, 250)).save(folder / "blank.png")
    write_csv(folder / "screens.csv", rows)
    return folder


@pytest.fixture(scope="module")
def ocr_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ocr-ws")


def _embedder(workspace: Path, monkeypatch: pytest.MonkeyPatch | None = None,
              spec: str = "screen:default") -> ScreenEmbedder:
    from core.embedders.screen import load_screen_embedder
    from storage.workspace import Workspace

    return load_screen_embedder(spec, cache=EmbeddingCache(100), ocr_workers=1,
                                workspace=Workspace.open(workspace),
                                load_text=lambda spec: load_embedder(spec, device="cpu", fallback=False))


def test_tesseract_reads_english_and_cyrillic_labels(shots: Path, ocr_workspace: Path) -> None:
    embedder = _embedder(ocr_workspace)
    english, russian = embedder.read_screens([shots / "login.png", shots / "login-ru.png"])
    assert "Password" in english.text and "Пароль" in russian.text
    word = next(w for w in russian.words if w.text == "Пароль")
    assert word.width > 0 and word.height > 0 and word.confidence > 50
    assert embedder.dimension == 384 + LAYOUT_DIM
    assert embedder.encode("login form").shape == (embedder.dimension,)


def test_ocr_cache_hit_does_not_run_tesseract_again(shots: Path, ocr_workspace: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import core.embedders.screen as screen

    calls: list[int] = []
    real = screen.read_text
    monkeypatch.setattr(screen, "read_text", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    embedder = _embedder(ocr_workspace)
    first = embedder.encode_images(shots / "checkout.png")
    embedder.cache.clear()  # the embedding cache forgets; the OCR cache must still answer
    again = embedder.encode_images(shots / "checkout.png")
    assert len(calls) == 1 and embedder.ocr_cache.stats()["memory_hits"] >= 1
    clear_shared_ocr_memory()
    fresh = _embedder(ocr_workspace)  # like a new process: the reading comes from disk
    np.testing.assert_allclose(fresh.encode_images(shots / "checkout.png"), first, atol=1e-6)
    np.testing.assert_allclose(again, first, atol=1e-6)
    assert len(calls) == 1 and fresh.ocr_cache.stats()["disk_hits"] == 1


def test_text_query_finds_the_right_workflow(shots: Path, ocr_workspace: Path) -> None:
    # English queries on English screens: the text-query path. On MiniLM: the default, multilingual-e5-small,
    # ranks the login screen above checkout for "pay by card" (its scores on long OCR dumps sit close together);
    # docs/benchmarks.md has both models on the whole screenshot set.
    embedder = _embedder(ocr_workspace, spec="screen:minilm")
    workflows = list(SHOTS)
    vectors = embedder.encode_images([shots / f"{w}.png" for w in workflows])
    queries = {"sign in with my password": "login", "save the file as": "file_save",
               "pay by card": "checkout", "create a calendar event": "calendar_event"}
    scores = embedder.encode_query(list(queries)) @ vectors.T
    assert [workflows[i] for i in scores.argmax(axis=1)] == list(queries.values())


def test_russian_and_french_screens_match_their_english_workflow_with_the_default(shots: Path,
                                                                                ocr_workspace: Path) -> None:
    workflows = list(SHOTS)
    # Variants 2 (Russian, light) and 4 (French, dark) of each workflow, against the English screens indexed above.
    others = [(workflow, render_screen(workflow, variant)[0]) for workflow in workflows for variant in (2, 4)]

    def right(spec: str) -> int:
        embedder = _embedder(ocr_workspace, spec=spec)
        scores = embedder.encode_images([image for _, image in others]) @ embedder.encode_images(
            [shots / f"{w}.png" for w in workflows]).T
        return sum(workflows[best] == workflow for best, (workflow, _) in zip(scores.argmax(axis=1), others,
                                                                            strict=True))

    multilingual, english_only = right("screen:default"), right("screen:minilm")
    assert multilingual == len(others) and english_only < multilingual, (multilingual, english_only)


def test_index_and_match_via_cli_flag_a_blank_screenshot(run_cli, shots: Path) -> None:
    result = run_cli("index", str(shots / "screens.csv"), "--collection", "shots", "--image-column", "image",
                     "--model", "screen:default")
    assert result.code == 0, result.err
    found = run_cli("match", "shots", str(shots / "login-dark.png"), "-k", "2")
    assert found.code == 0 and "workflow_id=login" in found.out.splitlines()[0]
    blank = run_cli("match", "shots", str(shots / "blank.png"))
    assert blank.code == 0 and "note: no text was read" in blank.out and "layout only" in blank.out


def test_bad_screenshots_are_one_line_each(run_cli, shots: Path, tmp_path: Path) -> None:
    assert run_cli("index", str(shots / "screens.csv"), "--collection", "s", "--image-column", "image",
                   "--model", "screen:default").code == 0
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "cut.png").write_bytes((shots / "login.png").read_bytes()[:3000])
    Image.new("1", (20_000, 20_000)).save(tmp_path / "huge.png")
    Image.new("L", (20_000, 6_000), 255).save(tmp_path / "wide.png")
    for name, message in (("notes.png", "is not an image PIL can read"), ("cut.png", "truncated or corrupted")):
        result = run_cli("match", "s", str(tmp_path / name))
        assert result.code == 1 and result.err.count("\n") == 1 and message in result.err, result.err
    for name in ("huge.png", "wide.png"):  # 400 MP and 120 MP: downscaled on read, then matched
        result = run_cli("match", "s", str(tmp_path / name))
        assert result.code == 0 and "note: no text was read" in result.out, result.err


def test_missing_tesseract_is_one_clear_line(run_cli, shots: Path, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "no-tesseract"))
    result = run_cli("index", str(shots / "screens.csv"), "--collection", "x", "--image-column", "image",
                     "--model", "screen:default")
    assert result.code == 1 and result.err.count("\n") == 1
    assert "tesseract is not installed" in result.err and "apt-get install tesseract-ocr" in result.err
    with pytest.raises(ModelLoadError, match="unknown setting"):
        load_embedder("screen:default?langs=eng")


def test_rendering_a_screenshot_set_reports_n_of_total(tmp_path: Path) -> None:
    from core.screens import generate_screens

    seen = []
    screens = generate_screens(tmp_path / "set", variants=2, workflows=["login", "checkout"], progress=seen.append)
    assert [p.done for p in seen] == [1, 2, 3, 4] and {p.total for p in seen} == {4}
    assert {p.task for p in seen} == {"render screenshots"}
    assert len(list((tmp_path / "set").rglob("*.png"))) + len(list((tmp_path / "set").rglob("*.jpg"))) == 4
    assert screens is not None
