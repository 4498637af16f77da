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


def _longest_side_both(outputs: dict, binary: bool, classes: int, native: tuple[int, int], side: int):
    """predict's maps of frames of `native` size fed at longest side `side`, and eval's maps of the
    same outputs scored at the labels' native size (`at_label_size`)."""
    from avseg.data.sample import Batch
    from avseg.data.transforms import content_size
    from avseg.engine.evaluate import at_label_size

    names = ("background", "sounding") if binary else tuple(f"c{i}" for i in range(classes + 1))
    rules = OutputRules(binary=binary, class_names=names)
    frames = next(iter(outputs.values())).shape[0]
    shown = np.stack([frame_output(outputs, f, native, rules, padded_side=side)[0] for f in range(frames)])
    batch = Batch(frames=torch.zeros(1, frames, 3, side, side), log_mel=torch.zeros(1, frames, 96, 64),
                  semantic=torch.zeros(1, frames, side, side, dtype=torch.long),
                  frame_present=torch.ones(1, frames, dtype=torch.bool),
                  label_present=torch.ones(1, frames, dtype=torch.bool), targets=[[]], clip_ids=["c"],
                  datasets=["ms3" if binary else "avss"],
                  extras={"native_semantic": [torch.zeros(frames, *native, dtype=torch.long)],
                          "content_size": [content_size(native[1], native[0], side)]})
    prediction = evaluation_maps(outputs, "binary" if binary else "semantic", (side, side))
    (_, scored, _), = list(at_label_size(batch, prediction, binary))
    return shown, scored["ids"].numpy()


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("native", [(30, 52), (52, 30)])
def test_longest_side_maps_of_eval_and_predict_are_equal(binary, native):
    """`data.resize: longest_side`: predict cuts the padding and resizes as eval scores."""
    shown, scored = _longest_side_both(_qsd_outputs(3), binary, 6, native, side=48)
    assert shown.shape[1:] == native and shown.any() and np.array_equal(shown, scored)
    tpavi = {"semantic_logits": torch.randn(3, 5, 12, 12, generator=torch.Generator().manual_seed(1)) * 2}
    shown, scored = _longest_side_both(tpavi, binary, 4, native, side=48)
    assert shown.shape[1:] == native and np.array_equal(shown, scored)


def test_predictor_feeds_longest_side_frames_padded_like_the_evaluation(tmp_path):
    from PIL import Image

    from avseg.config import load_config
    from avseg.data.transforms import resize_longest_side, to_normalized_tensor
    from avseg.inference.predictor import Predictor

    config = load_config("configs/cpu/qsd_r18_synth_avss.yaml",
                         ["data.image_size=48", "data.resize=longest_side", "model.d_model=32"])
    predictor = Predictor(torch.nn.Linear(1, 1), config)
    rgb = np.random.default_rng(0).integers(0, 255, (30, 52, 3), dtype=np.uint8)
    expected = to_normalized_tensor(resize_longest_side(Image.fromarray(rgb), 48))
    assert torch.equal(predictor._image(rgb), expected)
