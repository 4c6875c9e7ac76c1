"""LoRA adapters: list what was trained, and merge one into a plain model folder to ship.

A LoRA run's folder is what sentence-transformers saves for a model with an adapter
(``adapter_config.json`` + ``adapter_model.safetensors`` beside the modules); it loads with
peft installed. Merging folds the low-rank update into the base weights with peft's
``merge_and_unload`` and saves an ordinary sentence-transformers folder that loads without
peft, with a model card naming base, adapter and evaluation results.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import EmbtuneError, ModelLoadError

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class AdapterInfo:
    run: str | None
    path: str
    base: str
    rank: int
    alpha: int
    target_modules: list[str]
    size_bytes: int
    status: str | None
    ndcg10_after: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def adapter_folder(run_or_path: str, db: Any = None) -> tuple[Path, str | None]:
    """A run name (``run:NAME`` or ``NAME``) or a folder → the adapter folder and the run name."""
    name = run_or_path[4:] if run_or_path.startswith("run:") else run_or_path
    if db is not None and not Path(run_or_path).exists():
        from core.training.runs import resolve_run

        run = resolve_run(f"run:{name}", db)
        return Path(run.model_path), run.name
    return Path(run_or_path), None


def read_adapter(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise ModelLoadError(f"adapter folder {folder} does not exist")
    missing = [name for name in ADAPTER_FILES if not (folder / name).exists()]
    if missing:
        raise ModelLoadError(f"{folder} is not a LoRA adapter: {missing[0]} is missing")
    return json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))


def list_adapters(db: Any) -> list[AdapterInfo]:
    from storage.runs import RunStore

    found = []
    for run in RunStore(db).list():
        if not (run.config or {}).get("lora") or not run.model_path:
            continue
        folder = Path(run.model_path)
        try:
            adapter = read_adapter(folder)
        except ModelLoadError:
            continue
        found.append(AdapterInfo(
            run=run.name, path=str(folder), base=(run.config or {}).get("model", adapter["base_model_name_or_path"]),
            rank=int(adapter["r"]), alpha=int(adapter["lora_alpha"]), target_modules=sorted(adapter["target_modules"]),
            size_bytes=sum((folder / name).stat().st_size for name in ADAPTER_FILES), status=run.status,
            ndcg10_after=_ndcg_after(run.before_after or {}),
        ))
    return found


def _ndcg_after(before_after: dict[str, Any]) -> float | None:
    rows = [c for c in before_after.get("comparisons", []) if c["metric"] == "ndcg@10"]
    return max(rows, key=lambda c: c["dimension"])["mean_b"] if rows else None


def merge_adapter(run_or_path: str, out_dir: str | Path, *, db: Any = None, base: str | None = None) -> Path:
    """Write base + adapter merged as a plain sentence-transformers folder (refuses an existing ``out_dir``)."""
    from peft import PeftModel

    from core.embedders import load_embedder

    folder, run_name = adapter_folder(run_or_path, db)
    adapter = read_adapter(folder)
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists():
        raise EmbtuneError(f"{out_dir} already exists: merge into a new folder")
    run_info = _run_file(folder)
    base_spec = base or run_info.get("config", {}).get("model") or adapter["base_model_name_or_path"]
    model = load_embedder(base_spec, device="cpu", fallback=False, cache=False, reuse=False).model
    transformer = model[0]
    try:
        merged = PeftModel.from_pretrained(transformer.auto_model, str(folder)).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as exc:
        raise EmbtuneError(f"adapter {folder} does not fit base {base_spec!r} "
                           f"(trained on {adapter['base_model_name_or_path']}): {str(exc).splitlines()[0][:200]}"
                           ) from None
    transformer.auto_model = merged
    staging = out_dir.parent / f".{out_dir.name}.merging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save(str(staging))
    card = staging / "README.md"
    note = (f"\n\n## Merged by embtune\n\n- base: `{base_spec}`\n- adapter: `{folder}` (run `{run_name or '-'}`, "
            f"r={adapter['r']}, alpha={adapter['lora_alpha']}, targets {sorted(adapter['target_modules'])})\n")
    table = run_info.get("result", {}).get("table")
    if table:
        note += f"\nEvaluation of the adapter run (test split, before → after):\n\n{table}\n"
    card.write_text((card.read_text(encoding="utf-8") if card.exists() else "") + note, encoding="utf-8")
    os.replace(staging, out_dir)
    return out_dir


def _run_file(folder: Path) -> dict[str, Any]:
    path = folder / "embtune_run.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
