"""Audio-visual semantic recombination (AVSR, Eq. 5).

Each quantized semantic token k yields a channel filter w_k = Linear(ReLU(Linear(s_k))); the
visual maps are modulated by every filter, concatenated over the K tokens and reduced back:

    V_k = F_v * sigmoid(w_k);   F_v' = BN(Conv1x1([V_1; ...; V_K]))        (per pyramid level)

The 1x1 convolution over the K modulated copies is linear in F_v, so it is computed as one
per-frame C x C matrix applied to F_v (`SemanticRecombination.forward`):

    Conv1x1([V_1; ...; V_K]) = b + sum_k W_k diag(sigmoid(w_k)) F_v = b + W_eff F_v

where W_k is the k-th C x C block of the convolution's weight. The same function, with K times
fewer multiply-adds and no `[B*T, K*C, H, W]` tensor; `naive_forward` keeps the direct form and a
test checks they agree.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SemanticRecombination(nn.Module):
    """Eq. 5 over every level of the visual pyramid (the filters are shared, the reductions not)."""

    def __init__(self, d_model: int, num_tokens: int, num_levels: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.filters = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(inplace=True), nn.Linear(d_model, d_model))
        self.reduce = nn.ModuleList(
            nn.Sequential(nn.Conv2d(num_tokens * d_model, d_model, kernel_size=1), nn.BatchNorm2d(d_model))
            for _ in range(num_levels)
        )

    def gates(self, maps: list[Tensor], tokens: Tensor) -> Tensor:
        """sigmoid(w_k) for every frame: `[B*T, K, C]` (clip-level tokens repeated over the T frames)."""
        frames = maps[0].shape[0]
        if tokens.shape[0] != frames:
            if frames % tokens.shape[0]:
                raise ValueError(f"{frames} frames cannot be split over {tokens.shape[0]} clips")
            tokens = tokens.repeat_interleave(frames // tokens.shape[0], dim=0)
        return torch.sigmoid(self.filters(tokens))

    def forward(self, maps: list[Tensor], tokens: Tensor) -> list[Tensor]:
        """maps: L tensors `[B*T, C, H_l, W_l]`; tokens `[B, K, C]` (clip level) or `[B*T, K, C]`.

        Returns L recombined maps of the same shapes.
        """
        gates = self.gates(maps, tokens)  # [B*T, K, C]
        out = []
        for level, feature in enumerate(maps):
            conv, norm = self.reduce[level]
            frames, channels, height, width = feature.shape
            blocks = conv.weight.view(conv.out_channels, self.num_tokens, channels)  # W_k = blocks[:, k]
            effective = torch.einsum("okc,nkc->noc", blocks, gates)  # [B*T, C_out, C]
            reduced = torch.baddbmm(conv.bias[None, :, None], effective, feature.flatten(2))
            out.append(norm(reduced.view(frames, -1, height, width)))
        return out

    def naive_forward(self, maps: list[Tensor], tokens: Tensor) -> list[Tensor]:
        """Eq. 5 written directly (the K modulated copies concatenated, then the 1x1 convolution):
        the reference `forward` is tested against."""
        gates = self.gates(maps, tokens)
        out = []
        for level, feature in enumerate(maps):
            modulated = feature.unsqueeze(1) * gates[:, :, :, None, None]  # [B*T, K, C, H, W]
            out.append(self.reduce[level](modulated.flatten(1, 2)))
        return out
