"""TPAVI, the AVSBench baseline (Zhou et al., ECCV 2022): the function of the official code.

    frames -> backbone (strides 4..32) -> dilated-conv projection to C per stage
           -> TPAVI: temporal pixel-wise audio-visual interaction at each chosen stage
           -> top-down decoder of residual fusion blocks -> dense logits at the input size

TPAVI is a non-local block over windows of frames: every visual position (t, h, w) attends to the
audio of every frame of its window, broadcast over space, and the result is added back through a
zero-initialised projection. The model is dense (no queries): it returns `semantic_logits`, 1
channel for S4/MS3 (sigmoid) or one per class, background included, for AVSS (softmax).

The official code (OpenNLPLab/AVSBench, avs_scripts/{avs_s4,avs_ms3,avss}/model) has quirks that
change its output; they are reproduced here, with the same weights giving the same logits
(docs/model.md, "TPAVI: the official function"):

- `ResidualConvUnit` applies an in-place ReLU to its input, so its skip adds relu(x), not x, and
  the stage features the audio-visual matching loss sees are relu'd (`stage_features`).
- the decoder upsamples with `align_corners=True`; the head's x2 upsampling with False.
- TPAVI runs in windows of 5 consecutive frames (`window`); on a 10-frame AVSS clip frames 0-4
  never attend to frames 5-9.
- padded frame slots (AVSS): their audio embedding, their projected features, the TPAVI outputs,
  every decoder output and the logits are multiplied by the frame mask (padded logits are 0).
- on AVSS the audio alignment layer has no bias (`audio_bias=False`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avseg.models.backbones import Backbone
from avseg.models.tpavi_official import OFFICIAL_WINDOW, TASKS, convert_state_dict, official_config, read_official


class DilatedProjection(nn.Module):
    """Sum of four 3x3 convolutions with dilations 3, 6, 12, 18 (the official `Classifier_Module`)."""

    def __init__(self, in_channels: int, out_channels: int, dilations=(3, 6, 12, 18)):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 3, padding=d, dilation=d) for d in dilations)
        for conv in self.convs:
            nn.init.normal_(conv.weight, 0, 0.01)

    def forward(self, x: Tensor) -> Tensor:
        return sum(conv(x) for conv in self.convs)


class TPAVIBlock(nn.Module):
    """Audio-visual non-local attention over a window of frames (the official `TPAVIModule`, dot mode).

    Args:
        channels: C of the visual maps; inner width C/2.
        audio_dim: width of the audio features (128 for VGGish).
        audio_bias: bias of the audio alignment layer (official: True on S4 / MS3, False on AVSS).
    """

    def __init__(self, channels: int, audio_dim: int = 128, audio_bias: bool = True):
        super().__init__()
        inner = max(channels // 2, 1)
        self.align_audio = nn.Linear(audio_dim, channels, bias=audio_bias)
        self.theta = nn.Conv3d(channels, inner, 1)
        self.phi = nn.Conv3d(channels, inner, 1)
        self.g = nn.Conv3d(channels, inner, 1)
        self.out = nn.Sequential(nn.Conv3d(inner, channels, 1), nn.BatchNorm3d(channels))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)
        self.norm = nn.LayerNorm(channels)

    def forward(self, visual: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """visual `[B, C, T, H, W]`, audio `[B, T, A]` -> (visual `[B, C, T, H, W]`, audio `[B, T, C]`).

        The keys are the audio broadcast over space, so the (THW x THW) affinity of the reference
        has only T distinct columns per row: attending to all THW positions equals attending to
        the T audio keys with the values summed over each frame's H*W positions. That exact
        factorisation is computed here (`naive_attention` is the direct form, kept for tests);
        it turns O((THW)^2) memory into O(THW * T). Dot mode divides by the THW key positions.
        """
        batch, channels, frames, height, width = visual.shape
        aligned = self.align_audio(audio)  # [B, T, C]
        queries = self.theta(visual).flatten(2).transpose(1, 2)  # [B, THW, C']
        keys = self.phi(aligned.permute(0, 2, 1)[..., None, None]).flatten(2)  # [B, C', T]
        values = self.g(visual).flatten(3).sum(-1).transpose(1, 2)  # [B, T, C'] summed over space
        affinity = queries @ keys / (frames * height * width)  # dot mode: divided by #positions
        attended = (affinity @ values).transpose(1, 2).reshape(batch, -1, frames, height, width)
        return self._residual(visual, attended), aligned

    def naive_attention(self, visual: Tensor, audio: Tensor) -> Tensor:
        """The reference's direct form (audio map broadcast over H, W; full affinity): tests only."""
        batch, channels, frames, height, width = visual.shape
        audio_map = self.align_audio(audio).permute(0, 2, 1)[..., None, None].expand(-1, -1, -1, height, width)
        queries = self.theta(visual).flatten(2).transpose(1, 2)
        keys = self.phi(audio_map).flatten(2)
        values = self.g(visual).flatten(2).transpose(1, 2)
        affinity = queries @ keys / keys.shape[-1]
        attended = (affinity @ values).transpose(1, 2).reshape(batch, -1, frames, height, width)
        return self._residual(visual, attended)

    def _residual(self, visual: Tensor, attended: Tensor) -> Tensor:
        out = visual + self.out(attended)
        return self.norm(out.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class ResidualConvUnit(nn.Module):
    """relu(x) + conv2(relu(conv1(relu(x)))): the official unit's in-place ReLU rewrites its input,
    so the skip adds relu(x), not x."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        return x + self.conv2(F.relu(self.conv1(x)))


class FusionBlock(nn.Module):
    """Add the skip connection (refined), refine, upsample x2 with align_corners=True (the
    official `FeatureFusionBlock`; its first unit is unused at the coarsest level)."""

    def __init__(self, channels: int, with_skip: bool = True):
        super().__init__()
        self.skip = ResidualConvUnit(channels) if with_skip else None
        self.refine = ResidualConvUnit(channels)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None:
            x = x + self.skip(skip)
        return F.interpolate(self.refine(x), scale_factor=2, mode="bilinear", align_corners=True)


def _windows(frames: int, window: int) -> list[slice]:
    """Consecutive windows of `window` frames over a clip (the last may be shorter); 0 = one window."""
    size = window if window > 0 else frames
    return [slice(start, min(start + size, frames)) for start in range(0, frames, size)]


class TPAVI(nn.Module):
    """The AVSBench model: backbone, TPAVI at the chosen stages, top-down decoder.

    Args:
        backbone: a `Backbone` (strides 4, 8, 16, 32).
        audio_encoder: VGGish-like module mapping log-mel `[N, 96, 64]` to `[N, audio_dim]`.
        num_outputs: 1 for binary (S4, MS3) or the number of classes incl. background (AVSS).
        stages: indices (0..3) of the stages that get a TPAVI block.
        window: frames per TPAVI window (official: 5; 0 = the whole clip).
        audio_bias: bias of TPAVI's audio alignment layer (official: False on AVSS only).
    """

    def __init__(
        self, *, backbone: Backbone, audio_encoder: nn.Module, audio_dim: int = 128, channels: int = 256,
        num_outputs: int = 1, stages: tuple[int, ...] = (0, 1, 2, 3), freeze_audio_encoder: bool = True,
        window: int = OFFICIAL_WINDOW, audio_bias: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.audio_encoder = audio_encoder
        self.freeze_audio_encoder = freeze_audio_encoder
        if freeze_audio_encoder:
            audio_encoder.requires_grad_(False)
        self.stages, self.window = tuple(stages), window
        self.project = nn.ModuleList(DilatedProjection(c, channels) for c in backbone.channels)
        self.tpavi = nn.ModuleDict({str(i): TPAVIBlock(channels, audio_dim, audio_bias) for i in self.stages})
        self.decoder = nn.ModuleList(FusionBlock(channels, with_skip=level < 3) for level in range(4))
        self.head = nn.Sequential(
            nn.Conv2d(channels, 128, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(128, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, num_outputs, 1),
        )

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_audio_encoder:
            self.audio_encoder.eval()
        return self

    def _interact(self, index: int, feature: Tensor, audio: Tensor, batch: int, frames: int) -> tuple[Tensor, Tensor]:
        """TPAVI of one stage over windows: feature `[B*T, C, h, w]`, audio `[B, T, A]` ->
        (`[B*T, C, h, w]`, aligned audio `[B, T, C]`)."""
        clip = feature.view(batch, frames, *feature.shape[1:]).permute(0, 2, 1, 3, 4)  # [B, C, T, h, w]
        outs, aligned = [], []
        for part in _windows(frames, self.window):
            out, audio_part = self.tpavi[str(index)](clip[:, :, part], audio[:, part])
            outs.append(out)
            aligned.append(audio_part)
        out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
        return out.permute(0, 2, 1, 3, 4).flatten(0, 1), torch.cat(aligned, dim=1)

    def forward(self, frames: Tensor, log_mel: Tensor, frame_present: Tensor | None = None) -> dict:
        """frames `[B, T, 3, H, W]`, log_mel `[B, T, 96, 64]`, frame_present bool `[B, T]` (None =
        all real) -> {"semantic_logits": [B*T, O, H, W] (0 at padded slots), "stage_features":
        relu'd TPAVI outputs `[B*T, C, h, w]` per stage, "stage_audio": `[B, T, C]` per stage}
        (the last two feed the audio-visual matching loss)."""
        batch, num_frames = frames.shape[:2]
        mask = None
        if frame_present is not None and not bool(frame_present.all()):
            mask = frame_present.reshape(-1, 1, 1, 1).to(frames.dtype)  # [B*T, 1, 1, 1]

        def masked(x: Tensor) -> Tensor:
            return x if mask is None else x * mask.to(x.dtype)

        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_audio_encoder):
            audio = self.audio_encoder(log_mel.flatten(0, 1))
        audio = masked(audio[..., None, None])[..., 0, 0].view(batch, num_frames, -1)
        features = [masked(proj(f)) for proj, f in zip(self.project, self.backbone(frames.flatten(0, 1)))]
        stage_features, stage_audio = [], []
        for index in self.stages:
            feature, aligned = self._interact(index, features[index], audio, batch, num_frames)
            features[index] = masked(feature)
            stage_features.append(F.relu(features[index]))  # the official in-place ReLU rewrites them
            stage_audio.append(aligned)
        x = masked(self.decoder[3](features[3]))
        for level in (2, 1, 0):
            x = masked(self.decoder[level](x, features[level]))
        logits = masked(self.head(x))
        size = frames.shape[-2:]
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return {"semantic_logits": logits, "stage_features": stage_features, "stage_audio": stage_audio}


def from_official(path: str | Path, *, task: str, backbone: str = "r50", vggish_weights: str | Path | None = None) -> TPAVI:
    """An official AVSBench TPAVI checkpoint (S4, MS3 or AVSS; ResNet-50 or PVT-v2-b5) as an avseg
    TPAVI in eval mode.

    `model(frames [B, T, 3, H, W], log_mel [B, T, 96, 64], frame_present=None)["semantic_logits"]`
    `[B*T, O, H, W]` equals the official model's prediction given the VGGish embeddings of the
    same log-mel (`vggish_weights`: the public PyTorch port's `vggish-10086976.pth`; None = random
    VGGish with a warning). The file is read as the official training saves it (`module.` prefix,
    unused branches ignored); missing or unexpected keys are refused (UserError, one line).
    """
    from avseg.audio import load_vggish

    state = read_official(path)
    config = official_config(task, backbone).model
    model = TPAVI(backbone=Backbone(config.backbone, image_size=224), audio_encoder=load_vggish(vggish_weights or None),
                  num_outputs=TASKS[task], window=config.tpavi.window, audio_bias=config.tpavi.audio_bias)
    model.load_state_dict(convert_state_dict(state, model.state_dict(), str(path)), strict=False)
    return model.eval()
