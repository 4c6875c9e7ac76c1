"""Contrastive fine-tuning of an open_clip image tower on confirmed (screenshot, workflow) examples.

What each confirmed screenshot is pulled towards: its workflow's *prototype*, the mean
embedding of (a sample of) that workflow's indexed screenshots under the tower being
trained, recomputed at the start of every epoch. The loss is InfoNCE over workflows:
softmax over cosine(screenshot, prototype) × the model's own logit scale, the confirmed
workflow as the target class, every other workflow of the collection as a negative.

Prototypes are refreshed per epoch without gradients rather than back-propagated through
every step: one inference pass over the references per epoch instead of a forward and
backward pass over W × R screenshots per step (prohibitive for a ViT-B on a CPU), so each
prototype can average many screenshots. On the scikit-learn digits (benchmarks/image_compare.py)
prototypes of 4 screenshots each, with gradients, made held-out top-1 worse, not better.

Why prototypes of indexed screenshots rather than the workflow's description through the
frozen text tower: ``match()`` compares a screenshot with stored *screenshots* (image to
image), so this objective trains exactly what is served, and after the collection is
re-embedded with the new tower the stored screenshots move together with the queries.
Collections need not have descriptive texts at all (the text column is often a file
name), and a CLIP text tower knows little about one application's screens. The text tower
and the logit scale stay frozen, so text search keeps its meaning.

The optimiser is torch's AdamW at a small learning rate for a few epochs: enough to adapt to
a handful of confirmed screens without drifting far from the base model.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import ConfigDict, Field, PositiveInt

from core.configs import EmbtuneConfig
from core.errors import EmbtuneError
from core.images import ImageInput, read_image

# The model's logit scale is clamped like open_clip's training does (exp(scale) ≤ 100).
MAX_LOGIT_SCALE = 100.0


class ClipTuningSettings(EmbtuneConfig):
    """Hyper-parameters of one image-tower fine-tune (``FineTunerConfig`` fills them in), validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _label: ClassVar[str] = "image fine-tune"

    epochs: PositiveInt = 3
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = 1e-5
    batch_size: PositiveInt = 16
    references_per_workflow: PositiveInt = 32
    """Indexed screenshots per workflow averaged into its prototype (a fixed, seeded sample)."""
    seed: int = 0


def tune_image_tower(
    model: Any,
    preprocess: Callable[[Any], Any],
    examples: Sequence[tuple[ImageInput, str]],
    references: dict[str, Sequence[ImageInput]],
    settings: ClipTuningSettings,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Fine-tune ``model.visual`` in place; returns the mean loss of each epoch.

    ``examples`` are (image, workflow id); ``references`` maps every workflow of the
    collection to its indexed screenshots. ``on_epoch(epoch, loss)`` runs after each epoch
    (an exception there stops training and propagates: the caller's failure path).
    """
    import torch
    import torch.nn.functional as F

    workflows = sorted(references)
    if len(workflows) < 2:
        raise EmbtuneError(f"contrastive fine-tuning needs at least 2 workflows in the collection, found "
                           f"{len(workflows)}: index screenshots of more workflows first")
    unknown = sorted({workflow for _, workflow in examples} - set(workflows))
    if unknown:
        raise EmbtuneError(f"confirmed workflow {unknown[0]!r} has no indexed screenshots")
    if not examples:
        raise EmbtuneError("no training examples (every confirmed example is held out for evaluation)")
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    device = next(model.parameters()).device

    def pixels(images: Sequence[ImageInput]) -> Any:
        return torch.stack([preprocess(read_image(image)) for image in images]).to(device)

    # Decoded once: a fixed, seeded sample of each workflow's screenshots, and every example.
    reference_pixels = []
    for workflow in workflows:
        chosen = list(references[workflow])
        if len(chosen) > settings.references_per_workflow:
            chosen = rng.sample(chosen, settings.references_per_workflow)
        reference_pixels.append(pixels(chosen))
    example_pixels = pixels([image for image, _ in examples])
    column = {workflow: position for position, workflow in enumerate(workflows)}
    example_targets = torch.tensor([column[workflow] for _, workflow in examples], device=device)

    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable = list(model.visual.parameters())
    for parameter in trainable:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate)
    scale = float(model.logit_scale.detach().exp().clamp(max=MAX_LOGIT_SCALE)) if hasattr(model, "logit_scale") \
        else 1 / 0.07
    epoch_losses: list[float] = []
    try:
        for epoch in range(settings.epochs):
            prototypes = _prototypes(model, reference_pixels, settings.batch_size)
            model.train()
            order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(settings.seed + epoch))
            losses = []
            for start in range(0, len(order), settings.batch_size):
                batch = order[start:start + settings.batch_size].to(device)
                queries = F.normalize(model.encode_image(example_pixels[batch]), dim=-1)
                loss = F.cross_entropy(scale * queries @ prototypes.T, example_targets[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            model.eval()
            epoch_losses.append(sum(losses) / len(losses))
            if on_epoch is not None:
                on_epoch(epoch + 1, epoch_losses[-1])
    finally:
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    return epoch_losses


def _prototypes(model: Any, reference_pixels: list[Any], batch_size: int) -> Any:
    """Each workflow's normalised mean screenshot embedding under the current tower (no gradient)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    rows = []
    with torch.no_grad():
        for stack in reference_pixels:
            vectors = torch.cat([F.normalize(model.encode_image(stack[i:i + batch_size]), dim=-1)
                                 for i in range(0, len(stack), batch_size)])
            rows.append(vectors.mean(dim=0))
    return F.normalize(torch.stack(rows), dim=-1)


def save_clip_checkpoint(model: Any, base_spec: str, folder: Path) -> Path:
    """Write a fine-tuned open_clip model as a ``clip:FOLDER`` checkpoint with its base's architecture.

    The architecture and preprocessing come from the base: its folder's config for a local
    model, open_clip's registry for ``ARCH/TAG`` and hub models. ``folder`` should be a
    staging folder (``storage.workspace.atomic_folder``) so the checkpoint appears whole.
    """
    import open_clip

    from core.embedders.clip import read_clip_config, save_clip_folder
    from core.embedders.factory import resolve_clip_spec

    clip = resolve_clip_spec(base_spec)
    if clip.kind == "path":
        config = read_clip_config(Path(clip.model_id))
        model_cfg, preprocess_cfg = config["model_cfg"], config.get("preprocess_cfg")
    else:
        model_cfg = open_clip.get_model_config(clip.model_name.removeprefix("hf-hub:"))
        if model_cfg is None:
            raise EmbtuneError(f"cannot find the architecture of {base_spec} to save its fine-tune")
        preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    return save_clip_folder(model, model_cfg, folder, preprocess_cfg=preprocess_cfg)
