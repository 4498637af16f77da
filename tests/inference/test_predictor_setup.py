"""`Predictor`'s construction and `predict_clip`'s checks, value by value: the device rule with and
without CUDA, the defaults it shares with the evaluation and the data set, the ONNX runtime's CPU
rule, what `from_config` / `from_checkpoint` record, binary data's token rule, each message.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from avseg import Predictor
from avseg.config import load_config
from avseg.errors import UserError
from avseg.inference import predictor as predictor_module
from avseg.models.postprocess import segment
from recording import CAVP_CONFIG, SMALL, TPAVI_CONFIG, Recorder
from recording import recording_predictor as _predictor

pytestmark = pytest.mark.timeout(300)


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


class TwoTokens(nn.Module):
    """QSD-shaped outputs, the same for every frame: token A (score 0.9) covers columns 0-39 with mask
    probability 0.6, token B (score 0.4) columns 24-63 with 0.95; they overlap on columns 24-39."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, frames, log_mel, frame_present, waveform=None):
        n, size = frames.shape[0] * frames.shape[1], frames.shape[-1]
        masks = torch.full((n, 2, size, size), -10.0)
        masks[:, 0, :, :40], masks[:, 1, :, 24:] = logit(0.6), logit(0.95)
        scores = torch.tensor([[logit(0.9)], [logit(0.4)]]).expand(n, 2, 1)
        return {"pred_logits": scores, "pred_masks": masks}


def test_on_binary_data_a_pixel_belongs_to_its_most_probable_token():
    """S4 / MS3 (the binary rule of `segment`): the overlap goes to B, the surer mask, not to A,
    the better score x mask that semantic data would take."""
    predictor = Predictor(TwoTokens(), load_config(TPAVI_CONFIG.with_name("qsd_r18_synth_s4.yaml"), SMALL))
    (result,) = predictor.predict_clip(np.zeros((1, 64, 64, 3), np.uint8), None)
    assert (result["class_map"] == 1).all()
    assert result["objects"] == [{"class": "sounding", "class_id": 1, "score": 0.9, "box": [0.0, 0.0, 24.0, 64.0]},
                                 {"class": "sounding", "class_id": 1, "score": 0.4, "box": [24.0, 0.0, 64.0, 64.0]}]


# predict_clip's checks and result -----------------------------------------------------------------


@pytest.mark.parametrize("shape, dtype", [((2, 8, 8, 4), np.uint8), ((8, 8, 3), np.uint8), ((1, 8, 8, 3), np.float32)])
def test_predict_clip_refuses_frames_that_are_not_uint8_rgb(shape, dtype):
    with pytest.raises(ValueError, match=r"frames must be uint8 \[T, H, W, 3\]"):
        _predictor().predict_clip(np.zeros(shape, dtype), None)


def test_predict_clip_result_and_times_check():
    predictor = _predictor()
    with pytest.raises(ValueError, match=r"^2 times for 3 frames$"):
        predictor.predict_clip(np.zeros((3, 8, 8, 3), np.uint8), None, times=[0.0, 1.0])
    results = predictor.predict_clip(np.zeros((2, 8, 8, 3), np.uint8), None)
    assert [sorted(r) for r in results] == [["class_map", "objects", "time"]] * 2
    assert predictor.predict_clip(np.zeros((0, 8, 8, 3), np.uint8), None) == []


# construction -------------------------------------------------------------------------------------


def test_resolve_device(monkeypatch):
    resolve = predictor_module.resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve("auto") == resolve(None) == torch.device("cpu")
    assert resolve("cpu") == torch.device("cpu")
    with pytest.raises(UserError) as caught:
        resolve("cuda:0")
    assert str(caught.value) == "--device cuda:0: CUDA is not available on this machine"
    with pytest.raises(UserError, match=r"^--device gpu7: not a device \("):
        resolve("gpu7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a CUDA machine: auto takes it
    assert resolve("auto") == resolve(None) == torch.device("cuda")
    assert resolve("cpu") == torch.device("cpu") and resolve("cuda:1") == torch.device("cuda:1")


def test_defaults_follow_the_evaluation_and_the_data_set():
    predictor = _predictor()
    rule = inspect.signature(segment).parameters  # predict and eval merge with the same thresholds
    assert predictor.mask_threshold == rule["mask_threshold"].default
    assert predictor.score_threshold == rule["score_threshold"].default
    assert predictor.class_names == ["background", "sounding"] and predictor.binary
    semantic = _predictor(CAVP_CONFIG)
    classes = semantic.config.model.num_classes
    assert semantic.class_names == ["background"] + [f"class {i}" for i in range(1, classes + 1)]
    with pytest.warns(UserWarning, match=f"3 class names given for {classes + 1} class ids"):
        renamed = _predictor(CAVP_CONFIG, class_names=["a", "b", "c"])
    assert renamed.class_names == semantic.class_names
    assert _predictor(class_names=("quiet", "loud")).class_names == ["quiet", "loud"]
    with pytest.warns(UserWarning) as caught:
        assert _predictor(class_names=["a", "b", "c"]).class_names == ["background", "sounding"]
    assert [str(w.message) for w in caught] == [
        "3 class names given for 2 class ids (background included); using generic names"]


def test_without_a_device_the_model_stays_where_it_is():
    config = load_config(TPAVI_CONFIG, SMALL)
    kept = Predictor(Recorder().to("meta"), config)  # "meta" stands in for a second device here
    assert kept.device == torch.device("meta") and kept.model.scale.device == torch.device("meta")
    assert Predictor(nn.Sequential(), config).device == torch.device("cpu")  # no parameter: the CPU


class Graph:
    """Stands in for an OnnxModel: a graph file of fixed clip length T = 3."""

    path, frames = Path("graph.onnx"), 3

    def run_graph(self, frames, log_mel):
        raise AssertionError("not run here")


def test_the_onnx_runtime_runs_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config = load_config(TPAVI_CONFIG, SMALL)
    for device in (None, "cpu"):
        predictor = Predictor(Graph(), config, runtime="onnx", device=device)
        assert predictor.device == torch.device("cpu") and predictor.default_window == 3
        assert predictor.onnx_path == "graph.onnx"
    with pytest.raises(UserError) as caught:
        Predictor(Graph(), config, runtime="onnx", device="cuda")
    assert str(caught.value) == "runtime 'onnx' runs on the CPU here (ONNX Runtime's CPU provider)"


def test_runtime_errors_name_the_choice_and_the_model():
    config = load_config(TPAVI_CONFIG, SMALL)
    with pytest.raises(UserError) as caught:
        Predictor(Recorder(), config, runtime="tensorrt")
    assert str(caught.value) == "runtime 'tensorrt': expected one of torch, onnx"
    with pytest.raises(UserError) as caught:
        Predictor(Recorder(), config, runtime="onnx")
    assert str(caught.value) == "runtime 'onnx' needs an OnnxModel (Predictor.from_onnx), got a Recorder"
    assert Predictor(Recorder(), config).onnx_path is None


def test_from_config_warns_once_and_records_where_it_came_from(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the default is the CPU all the same
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # with VGGish: its own "no weights" warning is folded into the one RANDOM INIT warning
        predictor = Predictor.from_config(TPAVI_CONFIG, [*SMALL, "audio.encoder=vggish"], mask_threshold=0.7)
    assert [str(w.message) for w in caught] == [predictor_module.RANDOM_INIT_WARNING]
    assert predictor.device == torch.device("cpu") and predictor.random_init
    assert predictor.config_path == str(TPAVI_CONFIG) and predictor.checkpoint is None
    assert predictor.mask_threshold == 0.7 and predictor.class_names == ["background", "sounding"]
    with pytest.warns(UserWarning):
        elsewhere = Predictor.from_config(TPAVI_CONFIG, SMALL, device="meta")
    assert elsewhere.device == torch.device("meta") and next(elsewhere.model.parameters()).is_meta


def test_from_checkpoint_defaults_to_the_cpu_and_keeps_the_path(tpavi_checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the default is the CPU all the same
    predictor = Predictor.from_checkpoint(tpavi_checkpoint, score_threshold=0.6)
    assert predictor.device == torch.device("cpu") and not predictor.random_init
    assert predictor.checkpoint == str(tpavi_checkpoint) and predictor.score_threshold == 0.6
    assert predictor.config_path is None
