"""Semantic-guided mask decoder (Fig. 4b, Eq. 7): FPN, shared multimodal transformer decoder,
dynamic-convolution mask head (CondInst), class and box heads, auxiliary outputs per layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avseg.models.encoder import group_norm
from avseg.models.semantic_decoder import DecoderLayer


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def conv_gn_relu(in_ch: int, out_ch: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), group_norm(out_ch), nn.ReLU(inplace=True))


class FPN(nn.Module):
    """Top-down pyramid from stride 32 to stride 4; returns the mask features at stride 4.

    Args:
        stride4_channels: channels of the backbone's stride-4 map (the encoder does not refine it).
        d_model: channels of the encoder maps at strides 8, 16, 32.
        mask_dim: channels of the mask features the dynamic head convolves (8 as in CondInst).
    """

    def __init__(self, stride4_channels: int, d_model: int, mask_dim: int):
        super().__init__()
        self.lateral4 = nn.Sequential(nn.Conv2d(stride4_channels, d_model, 1), group_norm(d_model))
        self.smooth = nn.ModuleList(conv_gn_relu(d_model, d_model) for _ in range(3))
        self.out = nn.Conv2d(d_model, mask_dim, 1)

    def forward(self, stride4: Tensor, maps: list[Tensor]) -> Tensor:
        """stride4 `[N, C4, H/4, W/4]`, maps at strides 8/16/32 `[N, C, ...]` -> `[N, mask_dim, H/4, W/4]`."""
        laterals = [self.lateral4(stride4)] + list(maps)
        x = laterals[-1]
        for level in range(len(laterals) - 2, -1, -1):
            x = laterals[level] + F.interpolate(x, size=laterals[level].shape[-2:], mode="nearest")
            x = self.smooth[level](x)
        return self.out(x)


class DynamicMaskHead(nn.Module):
    """Eq. 7 (CondInst): each query's controller output parameterises three 1x1 convolutions that
    run over the shared mask features plus the coordinates relative to the query's box centre."""

    def __init__(self, mask_dim: int = 8, hidden: int = 8, num_layers: int = 3):
        super().__init__()
        in_dims = [mask_dim + 2] + [hidden] * (num_layers - 1)
        out_dims = [hidden] * (num_layers - 1) + [1]
        self.shapes = list(zip(in_dims, out_dims))
        self.num_params = sum(i * o + o for i, o in self.shapes)

    def forward(self, mask_features: Tensor, params: Tensor, centres: Tensor) -> Tensor:
        """mask_features `[N, D, h, w]`, params `[N, K, num_params]`, centres `[N, K, 2]` (x, y in
        [0, 1]) -> mask logits `[N, K, h, w]`."""
        frames, _, height, width = mask_features.shape
        num_queries = params.shape[1]
        ys = (torch.arange(height, device=params.device, dtype=params.dtype) + 0.5) / height
        xs = (torch.arange(width, device=params.device, dtype=params.dtype) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        rel_x = grid_x.reshape(1, 1, -1) - centres[..., 0:1]  # [N, K, h*w]
        rel_y = grid_y.reshape(1, 1, -1) - centres[..., 1:2]
        features = mask_features.flatten(2).unsqueeze(1).expand(-1, num_queries, -1, -1)
        x = torch.cat([features, rel_x.unsqueeze(2), rel_y.unsqueeze(2)], dim=2)  # [N, K, D+2, h*w]
        offset = 0
        for index, (in_dim, out_dim) in enumerate(self.shapes):
            weight = params[..., offset : offset + in_dim * out_dim].reshape(frames, num_queries, out_dim, in_dim)
            offset += in_dim * out_dim
            bias = params[..., offset : offset + out_dim].unsqueeze(-1)
            offset += out_dim
            x = torch.einsum("nkoi,nkip->nkop", weight, x) + bias
            if index < len(self.shapes) - 1:
                x = F.relu(x)
        return x.view(frames, num_queries, height, width)


class MaskDecoder(nn.Module):
    """Shared multimodal transformer decoder: per frame, K queries attend to that frame's
    multi-scale visual tokens; every layer's output is read by the class, box and mask heads."""

    def __init__(
        self, *, d_model: int, num_classes: int, num_layers: int, n_heads: int, ffn_dim: int,
        num_levels: int, mask_dim: int = 8, dropout: float = 0.0,
    ):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_heads, ffn_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.level_embed = nn.Parameter(torch.randn(num_levels, d_model) * 0.02)
        self.class_head = nn.Linear(d_model, num_classes)
        self.box_head = MLP(d_model, d_model, 4, 3)
        self.mask_head = DynamicMaskHead(mask_dim=mask_dim)
        self.controller = MLP(d_model, d_model, self.mask_head.num_params, 2)
        prior = 0.01  # focal-loss prior: start with low "object" probabilities
        nn.init.constant_(self.class_head.bias, -torch.log(torch.tensor((1 - prior) / prior)).item())

    def forward(
        self, queries: Tensor, maps: list[Tensor], positions: list[Tensor], mask_features: Tensor,
        query_pos: Tensor | None = None,
    ) -> dict:
        """queries `[N, K, C]` (N = B*T frames), maps/positions L x `[N, C, H_l, W_l]`,
        mask_features `[N, D, h, w]`.

        Returns {"pred_logits": [N, K, num_classes], "pred_boxes": [N, K, 4] (cx, cy, w, h in
        [0, 1]), "pred_masks": [N, K, h, w] logits, "aux_outputs": the same for earlier layers}.
        """
        memory = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
        if all(p.shape[0] == 1 or p.stride(0) == 0 for p in positions):
            positions = [p[:1] for p in positions]  # the same for every frame (the encoder's): [1, S, C]
        memory_pos = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[i] for i, p in enumerate(positions)], 1
        )
        outputs = []
        for layer in self.layers:
            queries = layer(queries, memory, query_pos=query_pos, memory_pos=memory_pos)
            outputs.append(self._heads(self.norm(queries), mask_features))
        final = outputs[-1]
        final["aux_outputs"] = outputs[:-1]
        return final

    def _heads(self, hidden: Tensor, mask_features: Tensor) -> dict:
        boxes = self.box_head(hidden).sigmoid()
        masks = self.mask_head(mask_features, self.controller(hidden), boxes[..., :2].detach())
        return {"pred_logits": self.class_head(hidden), "pred_boxes": boxes, "pred_masks": masks}
