"""A small supervised LoRA fine-tune of a causal LM on prompt/response pairs.

It exists so a user (and the demo) can produce an adapter to compare in the bench. Each
pair becomes one chat turn (the suite's system prompt, the user's prompt, the assistant's
response); the loss is on the response tokens only. Training is transformers' ``Trainer``
on a peft model, not a hand-written loop. The adapter is saved in peft format with the
base *spec* the bench will be given (e.g. ``smollm2``), so a mismatch is caught there.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DataError, EmbtuneError
from core.llmbench.config import BenchConfig
from core.llmbench.run import load_model
from core.llmbench.suite import DEFAULT_TRAIN, load_suite
from storage.workspace import check_writable


@dataclass
class LoraTrainingResult:
    output_dir: str
    examples: int
    steps: int
    train_seconds: float
    final_loss: float | None
    trainable_parameters: int
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_pairs(path: str | Path) -> list[dict[str, str]]:
    from core.data.formats import read_jsonl_records

    pairs = []
    for line_number, row in read_jsonl_records(path):
        if not str(row.get("prompt", "")).strip() or not str(row.get("response", "")).strip():
            raise DataError(f"{path}: line {line_number} needs non-empty 'prompt' and 'response'")
        pairs.append({"prompt": str(row["prompt"]), "response": str(row["response"])})
    if len(pairs) < 2:
        raise DataError(f"{path}: only {len(pairs)} pairs; at least 2 are needed")
    return pairs


def train_lora(base: str, output_dir: str | Path, *, data: str | Path = DEFAULT_TRAIN, epochs: float = 3.0,
               learning_rate: float = 2e-4, r: int = 8, alpha: int = 16, target_modules: list[str] | None = None,
               batch_size: int = 4, max_length: int = 128, seed: int = 42, suite: str = "default",
               overwrite: bool = False) -> LoraTrainingResult:
    import time

    import datasets
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    for option, value in (("--epochs", epochs), ("--lr", learning_rate), ("--r", r), ("alpha", alpha),
                          ("batch_size", batch_size), ("max_length", max_length)):
        if not value > 0:  # the trainer reads epochs ≤ 0 as nothing to do: an untrained adapter, saved as a result
            raise EmbtuneError(f"{option} {value} is not allowed: give a number above 0")
    check_writable(output_dir, what="--out", folder=True)
    output_dir = Path(output_dir).expanduser().resolve()
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise EmbtuneError(f"{output_dir} exists: choose a new folder or --overwrite")
    pairs = read_pairs(data)
    system_prompt = load_suite(suite).system_prompt
    loaded = load_model(BenchConfig.from_dict({"model": {"base": base, "device_map": "auto"}}))
    tokenizer, model = loaded.tokenizer, loaded.model
    model.config.use_cache = False
    targets = target_modules or ["q_proj", "v_proj"]
    peft_model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=alpha,
                                                  lora_dropout=0.05, target_modules=targets))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    if trainable == 0:
        raise EmbtuneError(f"LoRA on {targets} left no trainable parameters")

    def encode(pair: dict[str, str]) -> dict[str, list[int]]:
        head = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
            [{"role": "user", "content": pair["prompt"]}]
        prompt_ids = tokenizer.apply_chat_template(head, add_generation_prompt=True, return_dict=True)["input_ids"]
        full_ids = tokenizer.apply_chat_template([*head, {"role": "assistant", "content": pair["response"]}],
                                                 return_dict=True)["input_ids"]
        full_ids = list(full_ids)[:max_length]
        labels = [-100] * min(len(prompt_ids), len(full_ids)) + full_ids[len(prompt_ids):]
        return {"input_ids": full_ids, "attention_mask": [1] * len(full_ids), "labels": labels[: len(full_ids)]}

    dataset = datasets.Dataset.from_list(pairs).map(encode, remove_columns=["prompt", "response"])
    staging = output_dir.parent / f".{output_dir.name}.training-{os.getpid()}"
    args = TrainingArguments(output_dir=str(staging / "checkpoints"), num_train_epochs=epochs,
                             per_device_train_batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                             logging_steps=5, save_strategy="no", report_to=[], use_cpu=loaded.device == "cpu",
                             disable_tqdm=True)
    trainer = Trainer(model=peft_model, args=args, train_dataset=dataset,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    losses = [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    shutil.rmtree(staging, ignore_errors=True)
    peft_model.peft_config["default"].base_model_name_or_path = base
    peft_model.save_pretrained(str(staging))
    result = LoraTrainingResult(str(output_dir), len(pairs), int(trainer.state.global_step), seconds,
                                losses[-1] if losses else None, trainable, losses)
    (staging / "embtune_lora.json").write_text(json.dumps({"base": base, "data": str(data), **result.to_dict()},
                                                          indent=2), encoding="utf-8")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    os.replace(staging, output_dir)
    return result
