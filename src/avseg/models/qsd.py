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
import torch.nn.functional as F
from torch import Tensor, nn

from avseg.models.backbones import Backbone
from avseg.models.encoder import MultiScaleEncoder
from avseg.models.mask_decoder import FPN, MaskDecoder
from avseg.models.quantizer import SharedCodebookQuantizer
from avseg.models.recombination import SemanticRecombination
from avseg.models.semantic_decoder import AudioSemanticDecoder, AudioVisualFusion

DECOMPOSITIONS = ("none", "continuous", "quantized")
AUDIO_MEMORIES = ("embedding", "time_frequency")
TF_CELLS = 24  # 6 time x 4 frequency cells of a 96 x 64 log-mel example after the encoders' 16x pooling


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


def gate_logits(class_logits: Tensor, tag_logits: Tensor) -> Tensor:
    """Logits of sigmoid(class_logits) * sigmoid(tag_logits): `[F, K, C]` x `[F, C]` -> `[F, K, C]`.

    log p = logsigmoid(a) + logsigmoid(b); logit = log p - log(1 - p), computed without forming p.
    """
    log_p = (F.logsigmoid(class_logits.float()) + F.logsigmoid(tag_logits.float()).unsqueeze(1)).clamp(max=-1e-6)
    return (log_p - torch.log(-torch.expm1(log_p))).to(class_logits.dtype)


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
        audio_tagging_classes: int = 0, local_updates_codebook: bool = False, codebook_warmup_steps: int = 0,
        audio_memory: str = "embedding", tag_gating: bool = False,
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
        if audio_memory not in AUDIO_MEMORIES:
            raise ValueError(f"audio_memory must be one of {AUDIO_MEMORIES}, got {audio_memory!r}")
        # Optional, not in the paper (model.audio_memory="time_frequency"): the local ASD also reads
        # the audio encoder's time-frequency map (6 x 4 cells per second), so that its prototypes
        # can attend to different parts of the spectrum, i.e. to different sources of a mixture
        # (docs/model.md, row "local ASD memory").
        self.audio_tf_proj = self.audio_tf_pos = None
        if audio_memory == "time_frequency":
            if not switches.local_calibration or not hasattr(audio_encoder, "feature_map"):
                raise ValueError("audio_memory='time_frequency' needs local calibration and an audio "
                                 "encoder with feature_map/embed (VGGish, tiny)")
            self.audio_tf_proj = nn.Linear(audio_encoder.tokens_dim, d_model)
            self.audio_tf_pos = nn.Parameter(torch.randn(TF_CELLS, d_model) * 0.02)
        self.fusion = fusion
        self.global_asd, self.local_asd = global_asd, local_asd
        self.quantizer, self.recombination = quantizer, recombination
        self.mask_decoder = mask_decoder
        # Optional, not in the paper (model.codebook_from_local): local tokens, the decoder's
        # queries, also update the codebook (and seed its k-means init), so that E fits the
        # tokens it quantizes for the decoder (docs/model.md, row "codebook fitted to the queries").
        self.local_updates_codebook = local_updates_codebook
        # Optional, not in the paper (model.codebook_warmup_steps): the first training steps run
        # with continuous tokens (Table 2 row 3 behaviour); quantization (and with kmeans_init the
        # codebook's initialisation) starts after them. Saved with the model, so resuming counts on.
        self.register_buffer("warmup_steps_left", torch.tensor(int(codebook_warmup_steps)))
        self._warmup_over = codebook_warmup_steps <= 0  # a Python mirror: no device sync once over
        # Learned slot embeddings, added to the queries at every decoder attention (DETR's query
        # positions): quantized tokens may share a codeword, and identical queries would give
        # identical predictions that the one-to-one matching cannot tell apart.
        self.query_pos = nn.Embedding(num_tokens, d_model)
        # Optional, not in the paper (loss.audio_tagging > 0): a linear audio-tagging head on F_a,
        # trained to name each second's sounding classes, for audio encoders learning from scratch
        # (docs/model.md, row "audio encoder help for from-scratch runs").
        self.audio_tag_head = nn.Linear(d_model, audio_tagging_classes) if audio_tagging_classes > 0 else None
        # Optional, not in the paper (model.tag_gating, needs the tagging head): every token's class
        # probability is multiplied by the frame's audio-tag probability of that class, so a token
        # names a class only when the audio says that class sounds (docs/model.md, row "class gating").
        if tag_gating and self.audio_tag_head is None:
            raise ValueError("tag_gating needs the audio-tagging head (audio_tagging_classes > 0)")
        self.tag_gating = tag_gating
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

    def encode_audio(self, log_mel: Tensor) -> tuple[Tensor, Tensor | None]:
        """log_mel `[B, T, 96, 64]` -> audio features F_a `[B, T, C]` and, with the time-frequency
        memory, the projected time-frequency cells `[B*T, 24, C]` (else None)."""
        batch, frames = log_mel.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_audio_encoder):
            if self.audio_tf_proj is None:
                return self.audio_proj(self.audio_encoder(log_mel.flatten(0, 1)).view(batch, frames, -1)), None
            feature_map = self.audio_encoder.feature_map(log_mel.flatten(0, 1))  # [B*T, D, 6, 4]
            embeddings = self.audio_encoder.embed(feature_map)
        cells = feature_map.flatten(2).transpose(1, 2)  # [B*T, 24, D]
        if cells.shape[1] != TF_CELLS:
            raise ValueError(f"the audio encoder's time-frequency map has {cells.shape[1]} cells, expected {TF_CELLS}")
        return self.audio_proj(embeddings.view(batch, frames, -1)), self.audio_tf_proj(cells) + self.audio_tf_pos

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
        audio, cells = self.encode_audio(log_mel)
        fused = self.fuse(audio, maps[-1], positions[-1], frame_present)
        queries, vq, maps = self.decompose(fused, maps, frame_present, cells)
        query_pos = self.query_pos.weight.unsqueeze(0).expand(queries.shape[0], -1, -1)
        outputs = self.mask_decoder(queries, maps, positions, self.fpn(stride4, maps), query_pos=query_pos)
        outputs["vq"] = vq
        if self.training and not self._warmup_over:
            self.warmup_steps_left -= 1
            self._warmup_over = int(self.warmup_steps_left) <= 0
        if self.audio_tag_head is not None:
            outputs["audio_tag_logits"] = self.audio_tag_head(audio).flatten(0, 1)  # [B*T, classes]
            if self.tag_gating:
                for out in (outputs, *outputs["aux_outputs"]):
                    out["pred_logits"] = gate_logits(out["pred_logits"], outputs["audio_tag_logits"])
        return outputs

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
        """Turn the fused audio `[B, T, C]` into mask-decoder queries `[B*T, K, C]`.

        `cells` `[B*T, 24, C]` (time-frequency memory): appended to each frame's local ASD memory.

        Returns (queries, vq losses/statistics, visual maps (recombined when AVSR is on)).
        """
        s = self.switches
        batch, num_frames, d_model = fused.shape
        frame_audio = fused.flatten(0, 1).unsqueeze(1)  # [B*T, 1, C]
        local_memory = frame_audio if cells is None else torch.cat([frame_audio, cells], dim=1)
        vq: dict = {}
        if s.decomposition == "none":
            return frame_audio.expand(-1, self.num_tokens, -1), vq, maps
        local = None
        if s.local_calibration and self.local_updates_codebook and self.quantizing:
            # before the global call, so that k-means init sees the B*T*K frame tokens
            local = self.local_queries(local_memory, frame_present, vq)
        tokens = self.global_asd(fused, memory_padding=~frame_present)  # [B, K, C]
        if self.quantizing:
            result = self.quantizer(tokens, update_codebook=True)
            tokens = result["quantized"]
            vq.update(
                codebook_loss=result["codebook_loss"] + vq.pop("codebook_loss", 0.0),
                commitment_loss=result["commitment_loss"],
                perplexity=result["perplexity"], usage=result["usage"], indices=result["indices"],
            )
        if s.recombination:
            maps = self.recombination(maps, tokens)
        if s.local_calibration:
            if local is None:
                local = self.local_queries(local_memory, frame_present, vq)
            return local, vq, maps
        global_per_frame = tokens.repeat_interleave(num_frames, dim=0)  # [B*T, K, C]
        return global_per_frame + frame_audio, vq, maps

    def local_queries(self, memory: Tensor, frame_present: Tensor, vq: dict) -> Tensor:
        """Eq. 6: the local ASD's tokens of each frame (memory `[B*T, S, C]`), quantized with the shared codebook
        `[B*T, K, C]`; adds the local commitment loss (and, when local tokens update the codebook,
        their codebook loss) to `vq`."""
        local = self.local_asd(memory)  # [B*T, K, C]
        if not self.quantizing:
            return local
        present = frame_present.flatten()
        result = self.quantizer(local[present], update_codebook=self.local_updates_codebook, local=True)
        queries = local.clone()
        queries[present] = result["quantized"]
        vq.update(local_commitment_loss=result["commitment_loss"], local_indices=result["indices"])
        if self.local_updates_codebook:
            vq["codebook_loss"] = result["codebook_loss"]
        return queries
