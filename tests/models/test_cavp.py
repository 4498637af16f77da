"""The CAVP model: shapes, gradients, the audio reaching the output, the dilated backbone, the
per-part learning rates, and the shared post-processing."""

import pytest
import torch

from avseg.config import load_config
from avseg.engine.optim import parameter_groups
from avseg.errors import UserError
from avseg.models.build import build_criterion, build_model
from avseg.models.cavp_parts import DilatedResNet
from avseg.models.postprocess import segment

SMALL = ["model.name=cavp", "model.backbone=r18", "model.num_classes=3", "data.image_size=32",
         "model.cavp.aspp_channels=16", "model.cavp.low_level_channels=8", "model.cavp.projector_hidden=16",
         "audio.freeze=false"]


def _model(*overrides):
    torch.manual_seed(0)
    return build_model(load_config(None, [*SMALL, *overrides]))


def test_outputs_and_gradients_reach_every_part():
    model = _model().train()
    frames, audio = torch.randn(2, 2, 3, 32, 32), torch.randn(2, 2, 96, 64)
    out = model(frames, audio, paired_log_mel=torch.randn(2, 2, 96, 64))
    assert out["semantic_logits"].shape == (8, 4, 32, 32)  # 2 x (B*T) pairs, background + 3 classes
    assert out["fused"].shape == (8, 24, 8, 8)  # width 16 + 8 at stride 4
    criterion = build_criterion(load_config(None, [*SMALL, "model.cavp.max_views=4"]))
    semantic = torch.zeros(4, 32, 32, dtype=torch.long)
    semantic[:, 8:24, 8:24] = torch.tensor([1, 2, 3, 1]).view(4, 1, 1)
    losses = criterion(out, semantic, paired_semantic=torch.zeros_like(semantic))
    assert float(losses["loss_contrast"].detach()) > 0
    losses["loss_total"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


def test_the_audio_changes_the_output_and_the_paired_half_uses_the_paired_audio():
    model = _model().eval()
    frames, audio, other = torch.randn(1, 2, 3, 32, 32), torch.randn(1, 2, 96, 64), torch.randn(1, 2, 96, 64) * 3
    with torch.no_grad():
        alone = model(frames, audio)["semantic_logits"]
        paired = model(frames, audio, paired_log_mel=other)["semantic_logits"]
        with_other = model(frames, other)["semantic_logits"]
    assert not torch.allclose(alone, with_other, atol=1e-4)
    assert torch.allclose(paired[:2], alone, atol=1e-5) and torch.allclose(paired[2:], with_other, atol=1e-5)


def test_segment_turns_the_logits_into_maps():
    model = _model().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 3, 32, 32), torch.randn(1, 3, 96, 64))
    maps = segment(out, binary=False)
    assert maps["ids"].shape == (3, 32, 32) and int(maps["ids"].max()) <= 3
    assert segment(out, binary=True)["ids"].max() <= 1


@pytest.mark.parametrize("stride", [8, 16])
def test_the_backbone_is_dilated_to_its_output_stride_with_multigrid(stride):
    backbone = DilatedResNet("r18", output_stride=stride, layer4_dilations=(2, 4, 8))
    low, last = backbone(torch.randn(1, 3, 64, 64))
    assert low.shape[-1] == 16 and last.shape[-1] == 64 // stride
    blocks = list(backbone.body.layer4.children())
    assert [blocks[0].conv2.dilation, blocks[1].conv2.dilation] == [(2, 2), (4, 4)]
    with pytest.raises(UserError, match="CAVP needs a ResNet"):
        DilatedResNet("swint")


def test_the_head_trains_at_ten_times_the_lr_and_the_audio_network_at_its_own():
    model = _model("model.cavp.head_lr_mult=10", "model.cavp.audio_lr_mult=0.5")
    groups = {g["name"]: g for g in parameter_groups(model, lr=1e-3, backbone_lr_mult=1.0, weight_decay=1e-4)}
    assert groups["aspp"]["lr"] == pytest.approx(1e-2) and groups["classifier_no_decay"]["lr"] == pytest.approx(1e-2)
    assert groups["reduce"]["lr"] == pytest.approx(1e-2)
    assert groups["audio_encoder"]["lr"] == pytest.approx(5e-4) and groups["backbone"]["lr"] == pytest.approx(1e-3)
    assert groups["other"]["lr"] == pytest.approx(1e-3)  # projector and fusion
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("fusion.") or names[id(p)].startswith("projector.")
               for p in groups["other"]["params"])


def test_bad_cavp_options_are_named():
    with pytest.raises(UserError, match="model.cavp.audio_network"):
        _model("model.cavp.audio_network=wav2vec")
    with pytest.raises(UserError, match="fusion_heads"):
        _model("model.cavp.fusion_heads=5")
