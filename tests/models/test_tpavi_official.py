"""Official AVSBench TPAVI checkpoints: a state dict in the official key layout (built by the tests,
tests/models/official_layout.py) loads through `from_official`, weights land where the official
forward uses them, and anything else is refused with one line."""

import pytest
import torch

from avseg.audio import VGGish
from avseg.errors import UserError
from avseg.models.tpavi import from_official
from tests.models.official_layout import official_state_dict


@pytest.fixture(scope="module")
def vggish_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vggish") / "vggish.pth"
    torch.manual_seed(0)
    torch.save(VGGish().state_dict(), path)
    return path


def _save(tmp_path, state, name="official.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


@pytest.mark.parametrize("task", ["s4", "avss"])
def test_r50_checkpoint_loads_where_the_official_forward_uses_it(tmp_path, vggish_file, task):
    state = official_state_dict(task, "r50")
    model = from_official(_save(tmp_path, state), task=task, vggish_weights=vggish_file)
    assert not model.training
    pairs = {  # official key -> the avseg tensor the official forward reads it as
        "resnet.conv1.weight": model.backbone.body.conv1.weight,
        "resnet.layer3_1.5.conv3.weight": model.backbone.body.layer3[5].conv3.weight,
        "resnet.layer4_1.0.downsample.1.running_var": model.backbone.body.layer4[0].downsample[1].running_var,
        "conv4.conv2d_list.3.weight": model.project[3].convs[3].weight,
        "tpavi_b2.align_channel.weight": model.tpavi["1"].align_audio.weight,
        "tpavi_b3.W_z.1.running_mean": model.tpavi["2"].out[1].running_mean,
        "tpavi_b4.norm_layer.bias": model.tpavi["3"].norm.bias,
        "path1.resConfUnit1.conv2.bias": model.decoder[0].skip.conv2.bias,
        "path4.resConfUnit2.conv1.weight": model.decoder[3].refine.conv1.weight,
        "output_conv.4.weight": model.head[4].weight,
    }
    for key, tensor in pairs.items():
        assert torch.equal(tensor, state[f"module.{key}"]), key
    assert torch.equal(model.audio_encoder.embeddings[4].weight, torch.load(vggish_file)["embeddings.4.weight"])
    # AVSS: the official alignment layer has no bias; S4 / MS3 have one
    assert (model.tpavi["0"].align_audio.bias is None) == (task == "avss")
    frames, log_mel = torch.randn(1, 5, 3, 64, 64), torch.randn(1, 5, 96, 64)
    with torch.no_grad():
        logits = model(frames, log_mel)["semantic_logits"]
    assert logits.shape == (5, 71 if task == "avss" else 1, 64, 64) and torch.isfinite(logits).all()


def test_pvtb5_checkpoint_loads(tmp_path, vggish_file):
    state = official_state_dict("ms3", "pvtb5")
    model = from_official(_save(tmp_path, state), task="ms3", backbone="pvtb5", vggish_weights=vggish_file)
    body = model.backbone.body
    assert torch.equal(body.stages_2.blocks[39].mlp.dwconv.weight, state["module.encoder_backbone.block3.39.mlp.dwconv.dwconv.weight"])
    assert torch.equal(body.stages_1.downsample.proj.weight, state["module.encoder_backbone.patch_embed2.proj.weight"])
    assert torch.equal(body.stages_3.norm.weight, state["module.encoder_backbone.norm4.weight"])
    with torch.no_grad():
        logits = model(torch.randn(1, 5, 3, 64, 64), torch.randn(1, 5, 96, 64))["semantic_logits"]
    assert logits.shape == (5, 1, 64, 64) and torch.isfinite(logits).all()


def test_files_that_are_not_official_checkpoints_are_refused_in_one_line(tmp_path, vggish_file):
    state = official_state_dict("s4", "r50")
    missing = {k: v for k, v in state.items() if k != "module.tpavi_b3.theta.weight"}
    extra = {**state, "module.tpavi_b1.W_f.0.weight": torch.zeros(1, 256, 1, 1)}
    cases = {
        "missing": (missing, "tpavi.2.theta.weight"),
        "extra": (extra, "tpavi_b1.W_f.0.weight"),
        "other task": (official_state_dict("avss", "r50"), "align_audio.bias"),
        "other backbone": (official_state_dict("s4", "r50"), "resnet.conv1.weight"),
    }
    for name, (bad, named) in cases.items():
        backbone = "pvtb5" if name == "other backbone" else "r50"
        with pytest.raises(UserError) as err:
            from_official(_save(tmp_path, bad, f"{name}.pth"), task="s4", backbone=backbone, vggish_weights=vggish_file)
        message = str(err.value)
        assert named in message and f"{name}.pth" in message and "\n" not in message, (name, message)
    ms3 = official_state_dict("ms3", "r50")
    ms3["module.output_conv.4.weight"] = torch.zeros(2, 32, 1, 1)
    with pytest.raises(UserError, match="output_conv.4.weight|head.4.weight"):
        from_official(_save(tmp_path, ms3, "shape.pth"), task="ms3", vggish_weights=vggish_file)
    with pytest.raises(UserError, match="task 'vpo'"):
        from_official(_save(tmp_path, state), task="vpo", vggish_weights=vggish_file)
