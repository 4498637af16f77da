"""QSD's options that are NOT in the paper, in one place, all off by default (docs/model.md).

Each was added while diagnosing the CPU demo and is measured there; `QSDExtras.check` is the one
place that says which combinations make sense. The paper's model is `QSDExtras()`.

- `audio_tagging_classes` (config: `loss.audio_tagging > 0`): a linear audio-tagging head on F_a,
  trained to name each second's sounding classes.
- `tag_gating` (`model.extras.tag_gating`): each token's class probability times the frame's audio-tag
  probability of that class (needs the tagging head).
- `codebook_from_local` (`model.extras.codebook_from_local`): the local tokens, the decoder's queries,
  also update the codebook (and seed its k-means init).
- `codebook_warmup_steps` (`model.extras.codebook_warmup_steps`): continuous tokens for the first N
  training steps, quantization after.
- `audio_memory` (`model.extras.audio_memory`): "time_frequency" lets the local ASD also read the audio
  encoder's 6 x 4 time-frequency cells of each second, not only its one embedding.
- `local_query_audio` (`model.extras.local_query_audio`): row 6's queries are the quantized local tokens
  plus the frame's fused audio F_av[t], as rows 3-5's are their global tokens plus F_av[t].
- `local_reads_global` (`model.extras.local_reads_global`): the local ASD's memory of frame t also holds
  the clip's K global tokens (quantized when quantizing), not only F_av[t].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AUDIO_MEMORIES = ("embedding", "time_frequency")
TF_CELLS = 24  # 6 time x 4 frequency cells of a 96 x 64 log-mel example after the encoders' 16x pooling


@dataclass(frozen=True)
class QSDExtras:
    audio_tagging_classes: int = 0
    tag_gating: bool = False
    codebook_from_local: bool = False
    codebook_warmup_steps: int = 0
    audio_memory: str = "embedding"
    local_query_audio: bool = False
    local_reads_global: bool = False

    def check(self, *, local_calibration: bool) -> None:
        """ValueError naming the config option when a combination cannot work."""
        if self.audio_memory not in AUDIO_MEMORIES:
            raise ValueError(f"model.extras.audio_memory '{self.audio_memory}': expected one of {', '.join(AUDIO_MEMORIES)}")
        if self.audio_memory == "time_frequency" and not local_calibration:
            raise ValueError("model.extras.audio_memory=time_frequency feeds the local ASD: set model.qsd.local_calibration=true "
                             "(with model.qsd.decomposition=quantized)")
        if self.tag_gating and self.audio_tagging_classes <= 0:
            raise ValueError("model.extras.tag_gating multiplies class scores by the audio-tagging head's: "
                             "set loss.audio_tagging > 0")
        if self.codebook_from_local and not local_calibration:
            raise ValueError("model.extras.codebook_from_local needs local tokens: set model.qsd.local_calibration=true "
                             "(with model.qsd.decomposition=quantized)")
        for name in ("local_query_audio", "local_reads_global"):
            if getattr(self, name) and not local_calibration:
                raise ValueError(f"model.extras.{name} changes the local ASD: set model.qsd.local_calibration=true "
                                 "(with model.qsd.decomposition=quantized)")
        if self.local_reads_global and self.codebook_from_local:
            raise ValueError("model.extras.local_reads_global needs the global tokens before the local ones, "
                             "model.extras.codebook_from_local the local ones first: choose one")
        if self.codebook_warmup_steps < 0:
            raise ValueError(f"model.extras.codebook_warmup_steps must be >= 0, got {self.codebook_warmup_steps}")


def gate_logits(class_logits: Tensor, tag_logits: Tensor) -> Tensor:
    """Logits of sigmoid(class_logits) * sigmoid(tag_logits): `[F, K, C]` x `[F, C]` -> `[F, K, C]`.

    log p = logsigmoid(a) + logsigmoid(b); logit = log p - log(1 - p), computed without forming p.
    """
    log_p = (F.logsigmoid(class_logits.float()) + F.logsigmoid(tag_logits.float()).unsqueeze(1)).clamp(max=-1e-6)
    return (log_p - torch.log(-torch.expm1(log_p))).to(class_logits.dtype)


def gate_outputs(outputs: dict, tag_logits: Tensor) -> None:
    """Gate the class logits of the final and every auxiliary output by the audio tags."""
    for out in (outputs, *outputs["aux_outputs"]):
        out["pred_logits"] = gate_logits(out["pred_logits"], tag_logits)


class TimeFrequencyMemory(nn.Module):
    """The audio encoder's time-frequency cells of each second as extra local-ASD memory.

    feature map `[N, D, 6, 4]` -> cells `[N, 24, C]` (projected, plus learned cell positions).
    """

    def __init__(self, encoder_dim: int, d_model: int):
        super().__init__()
        self.proj = nn.Linear(encoder_dim, d_model)
        self.pos = nn.Parameter(torch.randn(TF_CELLS, d_model) * 0.02)

    def forward(self, feature_map: Tensor) -> Tensor:
        cells = feature_map.flatten(2).transpose(1, 2)  # [N, 24, D]
        if cells.shape[1] != TF_CELLS:
            raise ValueError(f"the audio encoder's time-frequency map has {cells.shape[1]} cells, expected {TF_CELLS}")
        return self.proj(cells) + self.pos
