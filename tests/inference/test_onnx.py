"""`avseg export` and the ONNX Runtime path: the graph's outputs equal PyTorch's, and
`avseg predict --runtime onnx` writes the same predictions as the PyTorch model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from avseg.cli import main
from avseg.config import load_config
from avseg.engine.checkpoint import save_checkpoint
from avseg.inference.export import TOLERANCE, export_onnx, verify_onnx
from avseg.inference.onnx_runtime import OnnxModel
from avseg.models.build import build_model

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
QSD_CONFIG = ROOT / "configs/cpu/qsd_r18_synth_avss.yaml"  # as tests/inference/conftest.py
TPAVI_CONFIG = ROOT / "configs/cpu/tpavi_r18_synth_s4.yaml"
SMALL = ["data.image_size=64"]
RANDOM = ["model.backbone_weights=", "audio.vggish_weights="]


def _model(path, overrides=()):
    config = load_config(path, [*SMALL, *RANDOM, *overrides])
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(config)
    with torch.no_grad():  # class scores spread wide (the gate's saturation is exercised), many above 0.3
        for name, parameter in model.named_parameters():
            if "class_head" in name or "audio_tag_head" in name:
                parameter.mul_(8) if name.endswith("weight") else parameter.fill_(1.0)
    return model.eval(), config


@pytest.fixture(scope="module")
def qsd_checkpoint(tmp_path_factory):
    model, config = _model(QSD_CONFIG)
    names = ["background"] + [f"thing {i}" for i in range(1, config.model.num_classes + 1)]
    return save_checkpoint(tmp_path_factory.mktemp("qsd") / "qsd.pt", model=model, config=config, class_names=names)


@pytest.fixture(scope="module")
def qsd_onnx(tmp_path_factory, qsd_checkpoint):
    out = tmp_path_factory.mktemp("onnx") / "qsd.onnx"
    report = out.with_suffix(".json")
    assert main(["export", "--checkpoint", str(qsd_checkpoint), "--onnx", str(out), "--frames", "3",
                 "--json", str(report)]) == 0
    return out, json.loads(report.read_text())


def test_export_writes_a_named_graph_with_dynamic_batch_and_is_verified(qsd_onnx):
    path, report = qsd_onnx
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["frames", "log_mel"]
    assert [o.name for o in graph.output] == ["pred_logits", "pred_boxes", "pred_masks"]
    frames_shape = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert frames_shape == ["batch", 3, 3, 64, 64]
    assert report["opset"] == 17 and report["tolerance"] == TOLERANCE
    assert {c["batch"] for c in report["checks"]} == {1, 2}
    assert any("synthetic clips" in c["inputs"] for c in report["checks"])
    for check in report["checks"]:
        assert set(check["max_abs_diff"]) == {"pred_logits", "pred_boxes", "pred_masks"}
        assert max(check["max_abs_diff"].values()) <= TOLERANCE


def test_onnx_model_matches_torch_for_any_batch_and_clip_length(qsd_onnx, qsd_checkpoint):
    path, _ = qsd_onnx
    runtime = OnnxModel(path)
    assert runtime.frames == 3 and runtime.image_size == 64 and runtime.class_names[1] == "thing 1"
    model = _model(QSD_CONFIG)[0]
    model.load_state_dict(torch.load(qsd_checkpoint, weights_only=True)["model"])
    frames, mels = torch.randn(2, 3, 3, 64, 64), torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        expected = model(frames, mels)
    got = runtime(frames, mels)
    for name in ("pred_logits", "pred_masks"):
        assert got[name].shape == expected[name].shape
        assert (got[name] - expected[name]).abs().max() <= TOLERANCE
    # 4 frames on a 3-frame graph: frames 0-2 are one window, frame 3 runs padded with copies of itself
    longer = torch.cat([frames[:1], frames[:1, :1]], 1), torch.cat([mels[:1], mels[:1, :1]], 1)
    out = runtime(*longer)
    assert out["pred_masks"].shape[0] == 4
    assert (out["pred_masks"][:3] - expected["pred_masks"][:3]).abs().max() <= TOLERANCE
    with torch.no_grad():
        alone = model(longer[0][:, [3, 3, 3]], longer[1][:, [3, 3, 3]])["pred_masks"][0]
    assert (out["pred_masks"][3] - alone).abs().max() <= TOLERANCE


def test_predict_with_onnx_runtime_writes_what_torch_writes(tmp_path, capsys, make_video, qsd_onnx, qsd_checkpoint):
    source = make_video(tmp_path / "clip.mp4", seconds=7, size=(96, 72), audio_rate=44100, channels=2)
    # random mask logits sit around -0.26: a threshold of 0.45 makes objects of a part of the pixels
    common = ["-i", str(source), "--no-progress", "--no-overlay", "--window", "3", "--mask-threshold", "0.45"]
    assert main(["predict", *common, "--out", str(tmp_path / "torch"), "--checkpoint", str(qsd_checkpoint),
                 "--device", "cpu"]) == 0
    assert main(["predict", *common, "--out", str(tmp_path / "onnx"), "--runtime", "onnx", str(qsd_onnx[0])]) == 0
    torch_report = json.loads((tmp_path / "torch/predictions.json").read_text())
    onnx_report = json.loads((tmp_path / "onnx/predictions.json").read_text())
    assert onnx_report["model"]["runtime"] == "onnx" and torch_report["model"]["runtime"] == "torch"
    assert onnx_report["model"]["onnx"] == str(qsd_onnx[0]) and torch_report["model"]["onnx"] is None
    assert len(onnx_report["frames"]) == len(torch_report["frames"]) == 7
    found = 0
    for a, b in zip(torch_report["frames"], onnx_report["frames"]):
        assert sorted(o["class"] for o in a["objects"]) == sorted(o["class"] for o in b["objects"])
        found += len(a["objects"])
        mask_a = np.asarray(Image.open(tmp_path / "torch" / a["mask"]))
        mask_b = np.asarray(Image.open(tmp_path / "onnx" / b["mask"]))
        union = (mask_a > 0) | (mask_b > 0)
        if union.any():
            assert ((mask_a == mask_b) & union).sum() / union.sum() >= 0.99
    assert found >= 7  # the comparison saw objects, not only empty frames


def test_onnx_runtime_refuses_a_window_other_than_the_exported_clip_length(tmp_path, capsys, make_video, qsd_onnx):
    source = make_video(tmp_path / "clip.mp4", seconds=2)
    code = main(["predict", "-i", str(source), "--out", str(tmp_path / "o"), "--no-progress", "--window", "5",
                 "--runtime", "onnx", str(qsd_onnx[0])])
    err = capsys.readouterr().err
    assert code == 1 and f"the ONNX graph {qsd_onnx[0]} was exported for clips of 3 frames" in err


def test_class_gate_of_saturated_scores_exports_exactly(tmp_path):
    """QSD's class gate sums two log-sigmoids and takes log(-expm1(.)): the exporter's own
    log-sigmoid is -inf below about -88 and ONNX has no Expm1 (avseg.inference.export)."""
    import onnxruntime

    from avseg.inference.export import OPSET, _expm1, _log_sigmoid
    from avseg.models.qsd import gate_logits

    class Gate(torch.nn.Module):
        def forward(self, scores, tags):
            return gate_logits(scores, tags)

    scores = torch.tensor([[[120.0, 30.0, 5.0, 0.0, -1e-3, -5.0, -30.0, -120.0]]])
    tags = torch.tensor([[60.0, 40.0, 5.0, 0.0, 2e-3, -5.0, -30.0, -95.0]])
    torch.onnx.register_custom_op_symbolic("aten::expm1", _expm1, OPSET)
    torch.onnx.register_custom_op_symbolic("aten::log_sigmoid", _log_sigmoid, OPSET)
    torch.onnx.export(Gate(), (scores, tags), str(tmp_path / "gate.onnx"), dynamo=False, opset_version=OPSET)
    session = onnxruntime.InferenceSession(str(tmp_path / "gate.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), (scores, tags))})[0]
    expected = gate_logits(scores, tags).numpy()
    assert np.isfinite(got).all() and np.abs(got - expected).max() <= TOLERANCE


def test_tpavi_exports_and_matches(tmp_path):
    from avseg import Predictor
    from avseg.inference.predictor import RANDOM_INIT_WARNING

    model, config = _model(TPAVI_CONFIG)
    path = export_onnx(model, config, tmp_path / "tpavi.onnx", frames=2, random_init=True)
    checks = verify_onnx(model, config, path, frames=2, real_clips=1)
    assert [list(c.max_abs_diff) for c in checks] == [["semantic_logits"]] * 3
    assert all(c.worst <= TOLERANCE for c in checks)
    with pytest.warns(UserWarning) as caught:  # an untrained graph is flagged as the PyTorch model is
        predictor = Predictor.from_onnx(path, intra_op_threads=1, score_threshold=0.6)
    assert [str(w.message) for w in caught] == [RANDOM_INIT_WARNING] and predictor.random_init
    assert predictor.model.session.get_session_options().intra_op_num_threads == 1
    assert predictor.score_threshold == 0.6 and predictor.default_window == 2


def test_unsupported_models_and_bad_files_are_one_clear_line(tmp_path, capsys):
    td = ["model.qsd.decomposition=none", "model.qsd.recombination=false", "model.qsd.local_calibration=false",
          "model.qsd.separator=nmf", "model.extras.tag_gating=false", "loss.audio_tagging=0"]
    code = main(["export", str(QSD_CONFIG), *SMALL, *td, "--random-init", "--onnx", str(tmp_path / "td.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "row 2 (TD" in err and "NMFSeparator" in err and "Traceback" not in err
    assert not (tmp_path / "td.onnx").exists()
    code = main(["export", str(QSD_CONFIG), "--onnx", str(tmp_path / "x.onnx")])
    assert code == 2 and "--random-init" in capsys.readouterr().err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph")
    code = main(["predict", "-i", "video.mp4", "--out", str(tmp_path / "o"), "--runtime", "onnx", str(junk)])
    err = capsys.readouterr().err
    assert code != 0 and "video.mp4" in err
    with pytest.raises(Exception, match="junk.onnx"):
        OnnxModel(junk)
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Linear(2, 2).eval(), (torch.zeros(1, 2),), str(plain), dynamo=False)
    with pytest.raises(Exception, match="not written by avseg export"):
        OnnxModel(plain)
