"""The parts of the CAVP model (docs/cavp.md): dilated ResNet, ASPP, audio-visual cross-attention,
audio networks. Written from the paper and a reading of the authors' code (cyh-0/CAVP); the
places where avseg differs from that code are listed in docs/cavp.md.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import Tensor, nn

from avseg.errors import UserError
from avseg.models.backbones import BACKBONES, check_imagenet_weights

RESNETS = ("r18", "r50", "r101")


class DilatedResNet(nn.Module):
    """A timm ResNet at output stride 8 or 16 returning (stride-4 features, last-stage features).

    The last stage's 3x3 convolutions get the multi-grid dilations `layer4_dilations` (one per
    block, the first ones when it has fewer blocks; the authors' code sets 2, 4, 8 whatever the
    output stride).
    """

    def __init__(self, name: str, *, output_stride: int = 16, layer4_dilations=(2, 4, 8), weights: str | Path | None = None):
        super().__init__()
        if name not in RESNETS:
            raise UserError(f"model.backbone '{name}': CAVP needs a ResNet ({', '.join(RESNETS)})")
        timm_name = BACKBONES.get(name, name)
        # zero_init_last=False: torchvision's initialisation (the authors' ResNets), not timm's zero-gamma blocks
        kwargs: dict = {"features_only": True, "out_indices": (1, 4), "output_stride": output_stride,
                        "zero_init_last": False}
        if weights:
            check_imagenet_weights(weights, timm_name)
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
        self.body = timm.create_model(timm_name, **kwargs)
        blocks = list(self.body.layer4.children())
        if layer4_dilations:
            if len(layer4_dilations) < len(blocks):  # extra values are left unused (ResNet-18: 2 blocks)
                raise UserError(f"model.cavp.layer4_dilations: {len(blocks)} values needed for {name}, "
                                f"got {list(layer4_dilations)}")
            for block, dilation in zip(blocks, layer4_dilations):
                for conv in block.modules():  # every 3x3 convolution of the block, as the authors
                    if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
                        conv.dilation, conv.padding = (int(dilation),) * 2, (int(dilation),) * 2
        self.channels: list[int] = list(self.body.feature_info.channels())  # [low-level, last stage]

    def forward(self, images: Tensor) -> list[Tensor]:
        return self.body(images)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as the authors' DeepLabV3+: a 1x1 and three dilated 3x3
    convolutions (no bias) -> BN -> LeakyReLU -> 1x1 reduction, plus the image-pooling branch
    (conv -> BN -> LeakyReLU -> 1x1) added to it, then BN and LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, rates=(6, 12, 18), hidden: int = 256):
        super().__init__()
        self.branches = nn.ModuleList([nn.Conv2d(in_channels, hidden, 1, bias=False)] + [
            nn.Conv2d(in_channels, hidden, 3, padding=r, dilation=r, bias=False) for r in rates])
        self.branches_bn = nn.BatchNorm2d(hidden * len(self.branches))
        self.reduce = nn.Conv2d(hidden * len(self.branches), out_channels, 1, bias=False)
        self.pool_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.pool_bn = nn.BatchNorm2d(hidden)
        self.pool_reduce = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.out_bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.reduce(F.leaky_relu(self.branches_bn(torch.cat([b(x) for b in self.branches], dim=1))))
        pooled = self.pool_reduce(F.leaky_relu(self.pool_bn(self.pool_conv(x.mean(dim=(2, 3), keepdim=True)))))
        return F.leaky_relu(self.out_bn(out + pooled))


class CrossAttentionFusion(nn.Module):
    """One audio-visual cross-attention block: every visual position queries the clip's single
    audio token.

        v = LN(W_v x), a = LN(W_a audio)          (one LayerNorm shared by both streams)
        attn = sigmoid(q(v) . k(a) / sqrt(d))     (per head; a sigmoid, not a softmax: with one
                                                    key a softmax would always be 1)
        v = v + proj(attn * val(a));  v = v + MLP(LN2(v));  out = LN3(v)

    The authors' block also updates the audio token from the visual one; with one block that
    result is never used, so it is not computed here (same parameters, same output).
    """

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % heads:
            raise UserError(f"model.cavp: the fused width {dim} is not divisible by fusion_heads={heads}")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.embed_visual, self.embed_audio = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm_in = nn.LayerNorm(dim)
        self.query, self.key, self.value = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.proj = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_out = nn.LayerNorm(dim)

    def _split(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [N, heads, L, d]

    def forward(self, visual: Tensor, audio: Tensor) -> Tensor:
        """visual tokens `[N, L, C]`, audio `[N, C]` -> fused tokens `[N, L, C]`."""
        v = self.norm_in(self.embed_visual(visual))
        a = self.norm_in(self.embed_audio(audio))[:, None]  # [N, 1, C]
        attn = torch.sigmoid(self._split(self.query(v)) @ self._split(self.key(a)).transpose(-2, -1) * self.scale)
        attended = (attn @ self._split(self.value(a))).transpose(1, 2).flatten(2)  # [N, L, C]
        v = v + self.proj(attended)
        v = v + self.mlp(self.norm_mlp(v))
        return self.norm_out(v)


def audio_as_image(log_mel: Tensor) -> Tensor:
    """`[N, frames, bands]` or `[N, C, frames, bands]` -> `[N, C, frames, bands]`."""
    return log_mel[:, None] if log_mel.dim() == 3 else log_mel


class ResNet18Audio(nn.Module):
    """The authors' audio network: a ResNet-18 over the spectrogram `[N, C, frames, 64]` (a new
    7x7 first convolution for C channels, global max pooling) and a linear layer to `dim`."""

    def __init__(self, dim: int, in_channels: int = 1, weights: str | Path | None = None):
        super().__init__()
        self.net = timm.create_model("resnet18", pretrained=False, in_chans=in_channels, num_classes=dim,
                                     global_pool="max", zero_init_last=False)
        if weights:
            load_resnet18_weights(self.net, weights)

    def forward(self, log_mel: Tensor) -> Tensor:
        return self.net(audio_as_image(log_mel))


def load_resnet18_weights(net: nn.Module, path: str | Path) -> None:
    """An ImageNet ResNet-18 file (torchvision / timm keys) into `net`; conv1 and fc stay random,
    as the authors replace both. UserError naming the file when it does not fit."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model.cavp.audio_weights: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip errors come in many types
        raise UserError(f"{path}: not a readable PyTorch state dict ({str(err).splitlines()[0]})") from None
    state = {k: v for k, v in state.items() if not k.startswith(("conv1.", "fc."))}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("conv1.", "fc."))]
    if missing or unexpected:
        raise UserError(f"{path}: not a ResNet-18 checkpoint (missing {missing[:3]}, unexpected {unexpected[:3]})")


class VGGishAudio(nn.Module):
    """VGGish with its last embedding layer replaced by Linear(4096, dim) (Kaiming-normal, zero
    bias; the ReLU after it kept), as the authors' "vgg" audio network. Input `[N, 96, 64]`."""

    def __init__(self, dim: int, weights: str | Path | None = None):
        super().__init__()
        from avseg.audio import load_vggish

        self.net = load_vggish(weights or None)
        last = nn.Linear(self.net.embeddings[4].in_features, dim)
        nn.init.kaiming_normal_(last.weight)
        nn.init.zeros_(last.bias)
        self.net.embeddings[4] = last

    def forward(self, log_mel: Tensor) -> Tensor:
        return self.net(log_mel)
