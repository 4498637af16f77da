"""The QSD model composed from its parts, with the switches of the paper's Table 2.

    frames -> backbone -> multi-scale encoder ------------------------------> (AVSR) -> FPN -> mask decoder
    log-mel -> VGGish -> proj -> fusion (Eq. 3) -> global ASD (Eq. 4) -> quantizer (Eq. 2) --^        ^
                                          \\-> local ASD (Eq. 6) -> quantizer (commitment only) ----/ (queries)

Table-2 rows as `QSDSwitches`:
    1 baseline        decomposition="none"                          (fused audio + learned embeddings as queries)
    2 + TD            row 1 run once per separated source (avseg.models.separation)
    3 + non-Q SD      decomposition="continuous"
    4 + Q SD          decomposition="quantized"
    5 + AVSR          row 4 + recombination=True
    6 + LC (full)     row 5 + local_calibration=True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avseg.models.backbones import Backbone
from avseg.models.encoder import MultiScaleEncoder
from avseg.models.mask_decoder import FPN, MaskDecoder
from avseg.models.quantizer import SharedCodebookQuantizer
from avseg.models.recombination import SemanticRecombination
from avseg.models.semantic_decoder import AudioSemanticDecoder, AudioVisualFusion

DECOMPOSITIONS = ("none", "continuous", "quantized")


@dataclass(frozen=True)
class QSDSwitches:
    """Which parts of QSD are on (see the module docstring for the Table-2 rows)."""

    decomposition: str = "quantized"
    recombination: bool = True
    local_calibration: bool = True

    def __post_init__(self):
        if self.decomposition not in DECOMPOSITIONS:
            raise ValueError(f"decomposition must be one of {DECOMPOSITIONS}, got {self.decomposition!r}")
        if self.decomposition == "none" and (self.recombination or self.local_calibration):
            raise ValueError("recombination and local calibration need decomposition != 'none'")
        if self.local_calibration and self.decomposition != "quantized":
            raise ValueError("local calibration commits local tokens to the codebook: needs decomposition='quantized'")


class QSD(nn.Module):
    """Quantization-based semantic decomposition for audio-visual segmentation.

    Parts are built by `avseg.models.build` and passed in (SAM-style composition).
    """

    def __init__(
        self, *, backbone: Backbone, encoder: MultiScaleEncoder, audio_encoder: nn.Module,
        audio_dim: int, fusion: AudioVisualFusion, mask_decoder: MaskDecoder, fpn: FPN,
        num_tokens: int, switches: QSDSwitches, global_asd: AudioSemanticDecoder | None = None,
        local_asd: AudioSemanticDecoder | None = None, quantizer: SharedCodebookQuantizer | None = None,
        recombination: SemanticRecombination | None = None, freeze_audio_encoder: bool = True,
        audio_tagging_classes: int = 0,
    ):
        super().__init__()
        d_model = encoder.d_model
        self.switches = switches
        self.num_tokens = num_tokens
        self.backbone, self.encoder, self.fpn = backbone, encoder, fpn
        self.audio_encoder = audio_encoder
        self.freeze_audio_encoder = freeze_audio_encoder
        if freeze_audio_encoder:
            audio_encoder.requires_grad_(False)
        self.audio_proj = nn.Linear(audio_dim, d_model)
        self.fusion = fusion
        self.global_asd, self.local_asd = global_asd, local_asd
        self.quantizer, self.recombination = quantizer, recombination
        self.mask_decoder = mask_decoder
        # Learned slot embeddings, added to the queries at every decoder attention (DETR's query
        # positions): quantized tokens may share a codeword, and identical queries would give
        # identical predictions that the one-to-one matching cannot tell apart.
        self.query_pos = nn.Embedding(num_tokens, d_model)
        # Optional, not in the paper (loss.audio_tagging > 0): a linear audio-tagging head on F_a,
        # trained to name each second's sounding classes, for audio encoders learning from scratch
        # (docs/model.md, row "audio encoder help for from-scratch runs").
        self.audio_tag_head = nn.Linear(d_model, audio_tagging_classes) if audio_tagging_classes > 0 else None
        self._check_parts()

    def _check_parts(self) -> None:
        s = self.switches
        needed = {
            "global_asd": s.decomposition != "none",
            "quantizer": s.decomposition == "quantized",
            "recombination": s.recombination,
            "local_asd": s.local_calibration,
        }
        for name, wanted in needed.items():
            if wanted != (getattr(self, name) is not None):
                raise ValueError(f"QSD part '{name}' must be {'given' if wanted else 'None'} for {s}")

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_audio_encoder:
            self.audio_encoder.eval()
        return self

    def encode_audio(self, log_mel: Tensor) -> Tensor:
        """log_mel `[B, T, 96, 64]` -> audio features F_a `[B, T, C]`."""
        batch, frames = log_mel.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_audio_encoder):
            embeddings = self.audio_encoder(log_mel.flatten(0, 1))
        return self.audio_proj(embeddings.view(batch, frames, -1))

    def forward(self, frames: Tensor, log_mel: Tensor, frame_present: Tensor | None = None) -> dict:
        """frames `[B, T, 3, H, W]`, log_mel `[B, T, 96, 64]`, frame_present `[B, T]` bool.

        Returns the mask decoder's dict for the B*T frames (pred_logits `[B*T, K, classes]`,
        pred_boxes `[B*T, K, 4]`, pred_masks `[B*T, K, H/4, W/4]`, aux_outputs) plus "vq": the
        quantizer's losses and statistics (empty when nothing is quantized), and with the
        audio-tagging head "audio_tag_logits" `[B*T, classes]`.
        """
        batch, num_frames = frames.shape[:2]
        if frame_present is None:
            frame_present = torch.ones(batch, num_frames, dtype=torch.bool, device=frames.device)
        stride4, *pyramid = self.backbone(frames.flatten(0, 1))
        maps, positions = self.encoder(pyramid)
        audio = self.encode_audio(log_mel)
        fused = self.fuse(audio, maps[-1], positions[-1], frame_present)
        queries, vq, maps = self.decompose(fused, maps, frame_present)
        query_pos = self.query_pos.weight.unsqueeze(0).expand(queries.shape[0], -1, -1)
        outputs = self.mask_decoder(queries, maps, positions, self.fpn(stride4, maps), query_pos=query_pos)
        outputs["vq"] = vq
        if self.audio_tag_head is not None:
            outputs["audio_tag_logits"] = self.audio_tag_head(audio).flatten(0, 1)  # [B*T, classes]
        return outputs

    def fuse(self, audio: Tensor, coarse: Tensor, coarse_pos: Tensor, frame_present: Tensor) -> Tensor:
        """Eq. 3 over the clip: audio `[B, T, C]` attends to the coarsest maps of all T frames."""
        batch, num_frames = audio.shape[:2]
        tokens_per_frame = coarse.shape[-2] * coarse.shape[-1]
        visual = coarse.flatten(2).transpose(1, 2).reshape(batch, num_frames * tokens_per_frame, -1)
        pos = coarse_pos.flatten(2).transpose(1, 2).reshape(batch, num_frames * tokens_per_frame, -1)
        padding = (~frame_present).repeat_interleave(tokens_per_frame, dim=1)
        return self.fusion(audio, visual, pos, visual_padding=padding)

    def decompose(self, fused: Tensor, maps: list[Tensor], frame_present: Tensor) -> tuple[Tensor, dict, list[Tensor]]:
        """Turn the fused audio `[B, T, C]` into mask-decoder queries `[B*T, K, C]`.

        Returns (queries, vq losses/statistics, visual maps (recombined when AVSR is on)).
        """
        s = self.switches
        batch, num_frames, d_model = fused.shape
        frame_audio = fused.flatten(0, 1).unsqueeze(1)  # [B*T, 1, C]
        vq: dict = {}
        if s.decomposition == "none":
            return frame_audio.expand(-1, self.num_tokens, -1), vq, maps
        tokens = self.global_asd(fused, memory_padding=~frame_present)  # [B, K, C]
        if s.decomposition == "quantized":
            result = self.quantizer(tokens, update_codebook=True)
            tokens = result["quantized"]
            vq.update(
                codebook_loss=result["codebook_loss"], commitment_loss=result["commitment_loss"],
                perplexity=result["perplexity"], usage=result["usage"], indices=result["indices"],
            )
        if s.recombination:
            maps = self.recombination(maps, tokens)
        if s.local_calibration:
            local = self.local_asd(frame_audio)  # [B*T, K, C]
            present = frame_present.flatten()
            result = self.quantizer(local[present], update_codebook=False)
            queries = local.clone()
            queries[present] = result["quantized"]
            vq.update(local_commitment_loss=result["commitment_loss"], local_indices=result["indices"])
            return queries, vq, maps
        global_per_frame = tokens.repeat_interleave(num_frames, dim=0)  # [B*T, K, C]
        return global_per_frame + frame_audio, vq, maps
