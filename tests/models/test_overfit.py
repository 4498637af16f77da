"""QSD (full, row 6) and TPAVI each overfit one small synthetic batch to a high J on the CPU.

One MS3-layout synthetic clip (5 frames, 96 px, several sounding objects), a fixed seed and a
fixed number of AdamW steps. J is the AVSBench frame IoU of the binary output against the
ground truth, measured with batch-statistics normalisation (as during those steps).
"""

import pytest
import torch

from avseg.config import load_config
from avseg.data.avsbench import MS3Dataset
from avseg.data.sample import collate_samples
from avseg.data.synth import SynthConfig, generate
from avseg.engine.step import compute_losses, forward_batch
from avseg.models.build import build_criterion, build_model
from avseg.models.postprocess import merge_masks

SIZE = 96


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("ms3")
    generate("ms3", root, SynthConfig(clips=4, image_size=SIZE, num_classes=4, seed=1, split=(1, 0, 0), workers=1))
    return collate_samples([MS3Dataset(root, "train", image_size=SIZE)[0]])


def frame_iou(outputs, batch) -> float:
    if "semantic_logits" in outputs:
        predicted = outputs["semantic_logits"][:, 0] > 0
    else:
        predicted = merge_masks(outputs["pred_logits"], outputs["pred_masks"], binary=True, size=(SIZE, SIZE)) > 0
    truth = batch.semantic.flatten(0, 1) > 0
    inter = (predicted & truth).sum(dim=(1, 2)).float()
    union = (predicted | truth).sum(dim=(1, 2)).float()
    return (inter / union.clamp_min(1)).mean().item()


def overfit(name: str, batch, steps: int) -> tuple[float, float, float, float]:
    config = load_config(f"configs/cpu/{name}_r18_synth_ms3.yaml", [f"data.image_size={SIZE}"])
    torch.manual_seed(0)
    model, criterion = build_model(config).train(), build_criterion(config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4, weight_decay=1e-4)
    with torch.no_grad():
        first_j = frame_iou(forward_batch(model, batch), batch)
    for step in range(steps):
        losses = compute_losses(forward_batch(model, batch), batch, criterion, class_agnostic=True)
        if step == 0:
            first_loss = losses["loss_total"].item()
        optimizer.zero_grad()
        losses["loss_total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    with torch.no_grad():
        return first_loss, losses["loss_total"].item(), first_j, frame_iou(forward_batch(model, batch), batch)


@pytest.mark.slow
def test_qsd_overfits_one_batch(batch):
    first_loss, last_loss, first_j, last_j = overfit("qsd", batch, steps=150)
    assert last_loss < 0.25 * first_loss
    assert first_j < 0.2 and last_j > 0.7, (first_j, last_j)


@pytest.mark.slow
def test_tpavi_overfits_one_batch(batch):
    first_loss, last_loss, first_j, last_j = overfit("tpavi", batch, steps=100)
    assert last_loss < 0.1 * first_loss
    assert first_j < 0.2 and last_j > 0.8, (first_j, last_j)
