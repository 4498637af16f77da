"""One forward pass and its losses, the same for training, overfit tests and evaluation.

Data (a `Batch`) -> model -> (set criterion with matching, or the dense criterion) -> losses.
"""

from __future__ import annotations

from torch import Tensor, nn

from avseg.data.datasets import is_binary
from avseg.data.sample import Batch
from avseg.data.targets import masks_to_targets

def is_class_agnostic(dataset: str) -> bool:
    """Binary ground truth (S4, MS3): targets are connected components (`avseg.data.datasets.is_binary`)."""
    return is_binary(dataset)


def frame_targets(batch: Batch, *, class_agnostic: bool, min_area: int = 4) -> list[dict[str, Tensor]]:
    """Matcher targets for the B*T frames of a batch, in the order of the model's outputs."""
    semantic = batch.semantic.flatten(0, 1)
    return [masks_to_targets(frame, class_agnostic=class_agnostic, min_area=min_area) for frame in semantic]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The avseg model inside DistributedDataParallel and torch.compile wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def forward_batch(model: nn.Module, batch: Batch) -> dict:
    """Run any avseg model (or its DDP / compiled wrapper) on a batch (the TD wrapper also gets the waveform)."""
    inputs = {"frames": batch.frames, "log_mel": batch.log_mel, "frame_present": batch.frame_present}
    if getattr(unwrap_model(model), "separator", None) is not None:
        inputs["waveform"] = batch.waveform
    return model(**inputs)


def compute_losses(outputs: dict, batch: Batch, criterion: nn.Module, *, class_agnostic: bool) -> dict[str, Tensor]:
    """Losses of a batch's outputs; frames without ground truth are left out."""
    valid = batch.label_present.flatten()
    if "semantic_logits" in outputs:  # dense models (TPAVI)
        return criterion(outputs, batch.semantic.flatten(0, 1), valid=valid)
    return criterion(outputs, frame_targets(batch, class_agnostic=class_agnostic), valid=valid)
