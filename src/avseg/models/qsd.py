"""The QSD model composed from its parts, with the switches of the paper's Table 2.

    frames -> backbone -> multi-scale encoder ------------------------------> (AVSR) -> FPN -> mask decoder
    log-mel -> VGGish -> proj -> fusion (Eq. 3) -> global ASD (Eq. 4) -> quantizer (Eq. 2) --^        ^
                                          \\-> local ASD (Eq. 6) -> quantizer (commitment only) ----/ (queries)

`forward` is the paper's pipeline, one line per step; `decompose` is Eq. 2, 4, 5 and 6. The options
that are not in the paper live in `QSDExtras` (avseg.models.qsd_extras), all off by default.

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
import torch.nn.functional as F
from torch import Tensor, nn

from avseg.models.backbones import Backbone
from avseg.models.encoder import MultiScaleEncoder
from avseg.models.mask_decoder import FPN, MaskDecoder
from avseg.models.quantizer import SharedCodebookQuantizer
from avseg.models.qsd_extras import QSDExtras, TimeFrequencyMemory, gate_logits, gate_outputs  # noqa: F401 (gate_logits re-exported)
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

    Parts are built by `avseg.models.build` and passed in (SAM-style composition); `switches`
    selects the Table-2 row, `extras` the non-paper options.
    """

    def __init__(
        self, *, backbone: Backbone, encoder: MultiScaleEncoder, audio_encoder: nn.Module, audio_dim: int,
        fusion: AudioVisualFusion, mask_decoder: MaskDecoder, fpn: FPN, num_tokens: int, switches: QSDSwitches,
        global_asd: AudioSemanticDecoder | None = None, local_asd: AudioSemanticDecoder | None = None,
        quantizer: SharedCodebookQuantizer | None = None, recombination: SemanticRecombination | None = None,
        freeze_audio_encoder: bool = True, extras: QSDExtras = QSDExtras(),
    ):
        super().__init__()
        extras.check(local_calibration=switches.local_calibration)
        d_model = encoder.d_model
        self.switches, self.extras, self.num_tokens = switches, extras, num_tokens
        self.backbone, self.encoder, self.fpn = backbone, encoder, fpn
        self.audio_encoder = audio_encoder
        self.freeze_audio_encoder = freeze_audio_encoder
        if freeze_audio_encoder:
            audio_encoder.requires_grad_(False)
        self.audio_proj = nn.Linear(audio_dim, d_model)
        self.audio_tf = None
        if extras.audio_memory == "time_frequency":
            if not hasattr(audio_encoder, "feature_map"):
                raise ValueError("model.extras.audio_memory=time_frequency needs an audio encoder with feature_map/embed "
                                 "(VGGish, tiny)")
            self.audio_tf = TimeFrequencyMemory(audio_encoder.tokens_dim, d_model)
        self.fusion = fusion
        self.global_asd, self.local_asd = global_asd, local_asd
        self.quantizer, self.recombination = quantizer, recombination
        self.mask_decoder = mask_decoder
        # warm-up (extras): training steps left with continuous tokens; saved, so a resume counts on
        self.register_buffer("warmup_steps_left", torch.tensor(int(extras.codebook_warmup_steps)))
        self._warmup_over = extras.codebook_warmup_steps <= 0  # a Python mirror: no device sync once over
        if not self._warmup_over:
            self.register_forward_hook(_count_warmup_step)
        # Learned slot embeddings, added to the queries at every decoder attention (DETR's query
        # positions): quantized tokens may share a codeword, and identical queries would give
        # identical predictions that the one-to-one matching cannot tell apart.
        self.query_pos = nn.Embedding(num_tokens, d_model)
        n_tags = extras.audio_tagging_classes
        self.audio_tag_head = nn.Linear(d_model, n_tags) if n_tags > 0 else None
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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the warm-up option existed: their quantizer was always on
        state_dict.setdefault(prefix + "warmup_steps_left", torch.tensor(0))
        for old, new in (("audio_tf_proj.", "audio_tf.proj."), ("audio_tf_pos", "audio_tf.pos")):  # before QSDExtras
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._warmup_over = False  # re-read from the loaded counter

    @property
    def quantizing(self) -> bool:
        """Whether tokens are quantized now (decomposition 'quantized' and any warm-up over)."""
        if not self._warmup_over:
            self._warmup_over = int(self.warmup_steps_left) <= 0
        return self.switches.decomposition == "quantized" and self._warmup_over

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_audio_encoder:
            self.audio_encoder.eval()
        return self

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
        stride4, *pyramid = self.backbone(frames.flatten(0, 1))            # visual features F_v
        maps, positions = self.encoder(pyramid)                            # multi-scale encoder
        audio, cells = self.encode_audio(log_mel)                          # F_a [B, T, C]
        fused = self.fuse(audio, maps[-1], positions[-1], frame_present)   # Eq. 3
        queries, vq, maps = self.decompose(fused, maps, frame_present, cells)  # Eq. 2, 4, 5, 6
        query_pos = self.query_pos.weight.unsqueeze(0).expand(queries.shape[0], -1, -1)
        outputs = self.mask_decoder(queries, maps, positions, self.fpn(stride4, maps), query_pos=query_pos)
        outputs["vq"] = vq
        if self.audio_tag_head is not None:  # extras: audio tagging, class gating
            outputs["audio_tag_logits"] = self.audio_tag_head(audio).flatten(0, 1)  # [B*T, classes]
            if self.extras.tag_gating:
                gate_outputs(outputs, outputs["audio_tag_logits"])
        return outputs

    def encode_audio(self, log_mel: Tensor) -> tuple[Tensor, Tensor | None]:
        """log_mel `[B, T, 96, 64]` -> audio features F_a `[B, T, C]` and, with the time-frequency
        memory, the projected time-frequency cells `[B*T, 24, C]` (else None)."""
        batch, frames = log_mel.shape[:2]
        # only the (frozen) encoder runs without gradients; the projection after it always learns
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_audio_encoder):
            if self.audio_tf is None:
                embeddings, feature_map = self.audio_encoder(log_mel.flatten(0, 1)), None
            else:
                feature_map = self.audio_encoder.feature_map(log_mel.flatten(0, 1))  # [B*T, D, 6, 4]
                embeddings = self.audio_encoder.embed(feature_map)
        cells = None if feature_map is None else self.audio_tf(feature_map)
        return self.audio_proj(embeddings.view(batch, frames, -1)), cells

    def fuse(self, audio: Tensor, coarse: Tensor, coarse_pos: Tensor, frame_present: Tensor) -> Tensor:
        """Eq. 3 over the clip: audio `[B, T, C]` attends to the coarsest maps of all T frames."""
        batch, num_frames = audio.shape[:2]
        tokens_per_frame = coarse.shape[-2] * coarse.shape[-1]
        visual = coarse.flatten(2).transpose(1, 2).reshape(batch, num_frames * tokens_per_frame, -1)
        pos = coarse_pos.flatten(2).transpose(1, 2).reshape(batch, num_frames * tokens_per_frame, -1)
        padding = (~frame_present).repeat_interleave(tokens_per_frame, dim=1)
        return self.fusion(audio, visual, pos, visual_padding=padding)

    def decompose(self, fused: Tensor, maps: list[Tensor], frame_present: Tensor,
                  cells: Tensor | None = None) -> tuple[Tensor, dict, list[Tensor]]:
        """The fused audio `[B, T, C]` -> mask-decoder queries `[B*T, K, C]`, by the Table-2 row.

        row 1: the frame's fused audio, repeated K times; rows 3-5: the clip's K global tokens
        (Eq. 4; quantized, Eq. 2, from row 4; AVSR recombines the maps with them, Eq. 5) plus the
        frame's audio; row 6: each frame's local tokens (Eq. 6), committed to the codebook.
        `cells` `[B*T, 24, C]` (extras, time-frequency memory) join each frame's local memory.

        Returns (queries, vq losses / statistics, visual maps (recombined when AVSR is on)).
        """
        frame_audio = fused.flatten(0, 1).unsqueeze(1)  # [B*T, 1, C]
        if self.switches.decomposition == "none":
            return frame_audio.expand(-1, self.num_tokens, -1), {}, maps
        local_memory = frame_audio if cells is None else torch.cat([frame_audio, cells], dim=1)
        early_local = self.extras.codebook_from_local and self.switches.local_calibration and self.quantizing
        # extras: local tokens that update the codebook go first, so k-means init sees the B*T*K tokens
        local = self.local_tokens(local_memory, frame_present) if early_local else None
        tokens, vq = self.global_tokens(fused, frame_present)
        if local is not None and "codebook_loss" in local[1]:
            vq["codebook_loss"] = vq["codebook_loss"] + local[1].pop("codebook_loss")
        if self.switches.recombination:
            maps = self.recombination(maps, tokens)
        if not self.switches.local_calibration:
            return tokens.repeat_interleave(fused.shape[1], dim=0) + frame_audio, vq, maps  # [B*T, K, C]
        if self.extras.local_reads_global:  # extras: frame t's memory also holds the clip's K global tokens
            local_memory = torch.cat([local_memory, tokens.repeat_interleave(fused.shape[1], dim=0)], dim=1)
        queries, local_vq = local if local is not None else self.local_tokens(local_memory, frame_present)
        if self.extras.local_query_audio:  # extras: the frame's audio joins the queries, as in rows 3-5
            queries = queries + frame_audio
        return queries, {**vq, **local_vq}, maps

    def global_tokens(self, fused: Tensor, frame_present: Tensor) -> tuple[Tensor, dict]:
        """Eq. 4 (and Eq. 2 when quantizing): the clip's semantic tokens `[B, K, C]` and the
        quantizer's losses and statistics (empty for continuous tokens)."""
        tokens = self.global_asd(fused, memory_padding=~frame_present)  # [B, K, C]
        if not self.quantizing:
            return tokens, {}
        result = self.quantizer(tokens, update_codebook=True)
        return result["quantized"], {key: result[key] for key in
                                     ("codebook_loss", "commitment_loss", "perplexity", "usage", "indices")}

    def local_tokens(self, memory: Tensor, frame_present: Tensor) -> tuple[Tensor, dict]:
        """Eq. 6: the local ASD's tokens of each frame (memory `[B*T, S, C]`), quantized with the
        shared codebook, `[B*T, K, C]`, and their losses (local commitment; with the extras'
        `codebook_from_local` also a codebook loss)."""
        local = self.local_asd(memory)  # [B*T, K, C]
        if not self.quantizing:
            return local, {}
        present = frame_present.flatten()
        updates = self.extras.codebook_from_local
        result = self.quantizer(local[present], update_codebook=updates, local=True)
        queries = local.clone()
        queries[present] = result["quantized"]
        stats = {"local_commitment_loss": result["commitment_loss"], "local_indices": result["indices"]}
        if updates:
            stats["codebook_loss"] = result["codebook_loss"]
        return queries, stats


def _count_warmup_step(model: QSD, _inputs, _outputs) -> None:
    """Forward hook of the extras' codebook warm-up: one training call = one step counted."""
    if model.training and not model._warmup_over:
        model.warmup_steps_left -= 1
        model._warmup_over = int(model.warmup_steps_left) <= 0
