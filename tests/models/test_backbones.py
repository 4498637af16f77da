"""timm backbones: a uniform stride-4..32 pyramid and ImageNet weights from a local file only."""

import pytest
import timm
import torch

from avseg.errors import UserError
from avseg.models.backbones import Backbone


# stage widths from the papers: ResNet-18, Swin-T (C = 96), PVTv2-b2
WIDTHS = {"r18": [64, 128, 256, 512], "swint": [96, 192, 384, 768], "pvtb2": [64, 128, 320, 512]}


@pytest.mark.parametrize("name", ["r18", "swint", "pvtb2"])
def test_pyramid_shapes_widths_and_batch_independence(name):
    torch.manual_seed(0)
    backbone = Backbone(name, image_size=64).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = backbone(images)
        alone = backbone(images[1:])
    assert [tuple(f.shape[2:]) for f in features] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert [f.shape[1] for f in features] == backbone.channels == WIDTHS[name]
    for batched, single in zip(features, alone):  # image 1's maps do not depend on image 0
        assert torch.allclose(batched[1:], single, atol=1e-4)
        assert not torch.allclose(batched[0], batched[1], atol=1e-3)  # and they depend on the image


def test_r18_pyramid_is_the_output_of_each_resnet_stage():
    """Stride 4 / 8 / 16 / 32 maps = layer1..layer4 of a plain ResNet-18 with the same weights."""
    torch.manual_seed(0)
    backbone = Backbone("r18", image_size=64).eval()
    plain = timm.create_model("resnet18", pretrained=False).eval()
    plain.load_state_dict(backbone.body.state_dict(), strict=False)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        x = plain.maxpool(plain.act1(plain.bn1(plain.conv1(images))))
        stages = []
        for layer in (plain.layer1, plain.layer2, plain.layer3, plain.layer4):
            x = layer(x)
            stages.append(x)
        features = backbone(images)
    for ours, reference in zip(features, stages):
        assert torch.allclose(ours, reference, atol=1e-5)


def test_local_imagenet_weights_are_loaded(tmp_path):
    reference = timm.create_model("resnet18", pretrained=False)  # a classifier checkpoint, fc included
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": reference.state_dict()}, path)
    backbone = Backbone("r18", weights=path)
    own = backbone.body.state_dict()
    assert torch.equal(own["conv1.weight"], reference.state_dict()["conv1.weight"])
    assert torch.equal(own["layer4.1.bn2.running_var"], reference.state_dict()["layer4.1.bn2.running_var"])


def test_bad_weight_files_name_the_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        Backbone("r18", weights=tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"foo": torch.zeros(1)}, wrong)
    with pytest.raises(UserError, match=r"wrong\.pth.*missing"):
        Backbone("r18", weights=wrong)
    other = tmp_path / "r34.pth"
    torch.save(timm.create_model("resnet34").state_dict(), other)
    with pytest.raises(UserError, match=r"another model"):
        Backbone("r18", weights=other)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="garbage.pth"):
        Backbone("r18", weights=garbage)
