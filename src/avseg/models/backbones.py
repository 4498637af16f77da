"""Visual backbones through timm's uniform `features_only` interface.

One wrapper gives every backbone the same output: a list of NCHW feature maps at strides
4, 8, 16 and 32. ImageNet weights are read from a local file named in the config; nothing is
ever downloaded.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from avseg.errors import UserError

log = logging.getLogger(__name__)

# Short names used in configs -> timm model names.
BACKBONES = {
    "r18": "resnet18",
    "r50": "resnet50",
    "r101": "resnet101",  # CAVP (VPO); ResNet-101 at strides 4..32 for the other models too
    "swint": "swin_tiny_patch4_window7_224",
    "pvtb2": "pvt_v2_b2",
    "pvtb5": "pvt_v2_b5",  # the official AVSBench "PVT" model
}
STRIDES = (4, 8, 16, 32)


class Backbone(nn.Module):
    """A timm backbone returning `[B, C_l, H/s, W/s]` for s in 4, 8, 16, 32.

    Args:
        name: a key of BACKBONES ("r18", "r50", "swint", "pvtb2", "pvtb5") or any timm model name that
            supports `features_only`.
        image_size: input side length (Swin needs it to size its attention windows).
        weights: local path of an ImageNet checkpoint for this model (a timm / torchvision state
            dict, or a dict holding one under "state_dict" or "model"), or None for random init.
    """

    def __init__(self, name: str, *, image_size: int = 224, weights: str | Path | None = None, drop_path: float = 0.0):
        super().__init__()
        timm_name = BACKBONES.get(name, name)
        kwargs: dict = {"features_only": True, "pretrained": False}
        if drop_path > 0:  # stochastic depth, rates rising linearly over the blocks (official PVT-v2: 0.1)
            kwargs["drop_path_rate"] = drop_path
        if "swin" in timm_name:
            kwargs["img_size"] = image_size
        try:
            probe = timm.create_model(timm_name, **kwargs)
        except RuntimeError as err:
            raise UserError(f"backbone '{name}': timm cannot build it ({err})") from None
        reductions = probe.feature_info.reduction()
        missing = [s for s in STRIDES if s not in reductions]
        if missing:
            raise UserError(f"backbone '{name}' has no feature maps at stride(s) {missing}")
        kwargs["out_indices"] = tuple(reductions.index(s) for s in STRIDES)
        if weights:
            check_imagenet_weights(weights, timm_name, kwargs.get("img_size"))
            kwargs["pretrained"] = True
            kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
        self.body = timm.create_model(timm_name, **kwargs)
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.channels_last = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")
        self.name = name
        if weights:
            log.info("backbone %s: ImageNet weights loaded from %s", name, weights)

    def forward(self, images: Tensor) -> list[Tensor]:
        """images `[B, 3, H, W]` -> list of 4 maps `[B, C_l, H/s_l, W/s_l]`, s_l = 4, 8, 16, 32."""
        features = self.body(images)
        if self.channels_last:
            features = [f.permute(0, 3, 1, 2).contiguous() for f in features]
        return features


def check_imagenet_weights(path: str | Path, timm_name: str, img_size: int | None = None) -> None:
    """Check that a local ImageNet checkpoint holds every weight of `timm_name` (classifier aside).

    timm then loads the file itself (it knows each family's key conversions); this check makes a
    wrong or partial file a UserError naming the file, instead of a silently random backbone.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path}: ImageNet weight file not found. Put the file there or set the config's "
            "model.backbone_weights to its path (empty = random initialisation)."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip / weights_only errors come in many types
        raise UserError(f"{path}: not a readable PyTorch state dict ({str(err).splitlines()[0]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict, found {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    full = timm.create_model(timm_name, pretrained=False, **({"img_size": img_size} if img_size else {}))
    family = importlib.import_module(type(full).__module__)
    if hasattr(family, "checkpoint_filter_fn"):  # official releases (Swin, PVT) use other key names
        try:
            state = family.checkpoint_filter_fn(state, full)
        except Exception as err:  # a file of another family can break the converter in many ways
            raise UserError(f"{path}: not a '{timm_name}' checkpoint ({err})") from None
    keys = set(state)
    head = full.pretrained_cfg.get("classifier", "fc")
    heads = (head,) if isinstance(head, str) else tuple(head)
    needed = [k for k in full.state_dict() if not k.startswith(heads) and "relative_position_index" not in k]
    missing = [k for k in needed if k not in keys]
    if missing:
        raise UserError(
            f"{path}: not a '{timm_name}' checkpoint: {len(missing)} of its {len(needed)} weights "
            f"are missing (first: {', '.join(missing[:3])})"
        )
    own = set(full.state_dict())
    extra = sorted(k for k in keys - own if not k.startswith(heads) and "relative_position" not in k and "attn_mask" not in k)
    if extra:
        raise UserError(
            f"{path}: holds {len(extra)} weights that '{timm_name}' does not have (first: "
            f"{', '.join(extra[:3])}); is it the checkpoint of another model?"
        )
    wrong = [k for k in needed if tuple(state[k].shape) != tuple(full.state_dict()[k].shape)]
    if wrong:
        raise UserError(f"{path}: shapes do not fit '{timm_name}' (first: {', '.join(wrong[:3])})")


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm of `module` in eval mode with frozen affine parameters."""
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            child.eval()
            for param in child.parameters():
                param.requires_grad_(False)


@torch.no_grad()
def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total, trainable
