"""The model a run trains: loaded from its spec (never a fallback), LoRA-wrapped when asked, on the device and in
the precision the config and the machine allow. The trainer and the cost probe both start here."""

from __future__ import annotations

import logging
from typing import Any

from core.device import resolve_device
from core.errors import EmbtuneError
from core.training.config import TrainingConfig

logger = logging.getLogger(__name__)


def device_and_precision(config: TrainingConfig, warnings_list: list[str]) -> tuple[str, str]:
    import torch

    try:
        device = resolve_device(config.device)
    except EmbtuneError as exc:
        warnings_list.append(f"{exc}; training on the CPU instead")
        logger.warning(warnings_list[-1])
        device = "cpu"
    precision = config.precision
    on_cuda = device.startswith("cuda")
    if precision == "auto":
        precision = "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "fp32"
    elif precision in ("bf16", "fp16") and not on_cuda:
        warnings_list.append(f"precision {precision} needs a CUDA GPU here; training in fp32 on {device}")
        logger.warning(warnings_list[-1])
        precision = "fp32"
    return device, precision


def load_trainable(config: TrainingConfig, device: str) -> Any:
    from core.embedders import load_embedder

    embedder = load_embedder(config.model, device=device, fallback=False, cache=False, reuse=False)
    model = embedder.model
    model.max_seq_length = config.max_seq_length
    if config.lora:
        from peft import LoraConfig, TaskType

        targets = config.lora_target_modules or attention_targets(model)
        model.add_adapter(LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=config.lora_r,
                                     lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                     target_modules=targets))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if trainable == 0:
            raise EmbtuneError(f"LoRA on {targets} left no trainable parameters")
    return model


def attention_targets(model: Any) -> list[str]:
    """The query/value projections by their usual names (BERT: query/value; Llama-style: q_proj/v_proj)."""
    import torch

    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    for pair in (["query", "value"], ["q_proj", "v_proj"], ["q", "v"], ["q_lin", "v_lin"]):
        if set(pair) <= names:
            return pair
    raise EmbtuneError(f"cannot find attention projections for LoRA among {sorted(names)[:12]}: set "
                       "lora_target_modules")


def model_dimension(model: Any) -> int:
    from core.embedders.text import embedding_dimension

    return embedding_dimension(model)
