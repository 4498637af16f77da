"""What a user sees is what the metrics scored: `avseg eval` and `avseg predict` share one rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avseg.engine.evaluate import predict as evaluation_maps
from avseg.inference.frame_output import OutputRules, frame_output

SIZE = (24, 32)


def _qsd_outputs(seed: int, frames: int = 4, tokens: int = 5, classes: int = 6) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"pred_logits": torch.randn(frames, tokens, classes, generator=generator) * 2,
            "pred_masks": torch.randn(frames, tokens, 12, 16, generator=generator) * 2}


def _both(outputs: dict, binary: bool, classes: int) -> tuple[np.ndarray, np.ndarray]:
    names = ("background", "sounding") if binary else tuple(f"c{i}" for i in range(classes + 1))
    rules = OutputRules(binary=binary, class_names=names)
    frames = next(iter(outputs.values())).shape[0]
    shown = np.stack([frame_output(outputs, f, SIZE, rules)[0] for f in range(frames)])
    scored = evaluation_maps(outputs, "binary" if binary else "semantic", SIZE)["ids"].numpy()
    return shown, scored


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_qsd_maps_of_eval_and_predict_are_equal(binary, seed):
    shown, scored = _both(_qsd_outputs(seed), binary, 6)
    assert shown.any() and np.array_equal(shown, scored)


@pytest.mark.parametrize("binary,channels", [(True, 1), (False, 5), (True, 5)])
def test_tpavi_maps_of_eval_and_predict_are_equal(binary, channels):
    outputs = {"semantic_logits": torch.randn(3, channels, 12, 16, generator=torch.Generator().manual_seed(7)) * 2}
    shown, scored = _both(outputs, binary, channels - 1)
    assert np.array_equal(shown, scored)


def test_a_confident_token_with_a_weak_mask_sounds_in_both():
    # the case that once split them: score 0.9, mask probability 0.55 (eval: sounds; the old
    # predict rule thresholded 0.9 * 0.55 = 0.495 and called it background)
    logits = torch.full((1, 2, 1), -6.0)
    logits[0, 0, 0] = float(torch.logit(torch.tensor(0.9)))
    masks = torch.full((1, 2, 12, 16), -6.0)
    masks[0, 0, :6] = float(torch.logit(torch.tensor(0.55)))
    shown, scored = _both({"pred_logits": logits, "pred_masks": masks}, True, 1)
    assert np.array_equal(shown, scored) and shown[0, :10].all() and not shown[0, 14:].any()
