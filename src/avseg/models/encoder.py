"""Multi-scale transformer encoder over the backbone pyramid (deformable attention, pure PyTorch).

ReferFormer, which QSD builds on, refines the backbone's stride-8/16/32 maps with a Deformable-DETR
encoder. Its attention is a CUDA kernel there; here it is pure PyTorch, so it runs on any device
and dtype and needs nothing compiled (qsd-method.md §1 [choice]). The bilinear sampling of all
heads, levels and points is one `embedding_bag` over the four corner taps of every sample
(`deformable_sample`): the same function as one `grid_sample` per level followed by the weighted
sum (tests/models/test_fast_paths.py compares them, values and gradients), about 3x faster on the CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def sine_position_embedding(height: int, width: int, channels: int, device=None, dtype=None) -> Tensor:
    """DETR's normalised 2-D sine embedding: `[channels, height, width]` (channels even)."""
    half = channels // 2
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 * math.pi
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 * math.pi
    dim_t = 10000 ** (2 * (torch.arange(half, device=device) // 2) / half)
    pos_y = ys[:, None] / dim_t  # [H, half]
    pos_x = xs[:, None] / dim_t  # [W, half]
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    grid = torch.cat(
        (pos_y[:, None, :].expand(height, width, half), pos_x[None, :, :].expand(height, width, half)), dim=2
    )
    return grid.permute(2, 0, 1).to(dtype or torch.float32)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


def softmax_lastdim(x: Tensor) -> Tensor:
    """softmax over the last dimension, written out (exp(x - max) / sum): the same function as
    `Tensor.softmax(-1)`, about 3x faster on the CPU for a last dimension as short as L*P = 12.
    The max is a constant shift (softmax does not depend on it), so no gradient flows through it."""
    shifted = (x - x.amax(-1, keepdim=True).detach()).exp()
    return shifted / shifted.sum(-1, keepdim=True)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR), bilinear sampling in pure PyTorch.

    Each query attends to `n_points` learned offsets around its reference point on every level.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 3, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.n_levels, self.n_heads, self.n_points = n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        for point in range(self.n_points):
            grid[:, :, point, :] *= point + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, reference_points: Tensor, value: Tensor, spatial_shapes: list[tuple[int, int]]) -> Tensor:
        """query `[B, Q, C]`, reference_points `[B, Q, L, 2]` (x, y in [0, 1]; a batch of 1 is shared
        by all B), value `[B, S, C]` (the L levels flattened, S = sum H_l * W_l) -> `[B, Q, C]`."""
        batch, num_queries, channels = query.shape
        heads, levels, points = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(value).view(batch, -1, heads, channels // heads)
        # Offsets and attention weights in ONE product; the offset rows reordered from (head, level,
        # point, xy) to (xy, head, level, point), so x and y each come out as a contiguous block.
        samples = heads * levels * points
        weight = torch.cat((self.sampling_offsets.weight.view(samples, 2, channels).transpose(0, 1).flatten(0, 1),
                            self.attention_weights.weight))
        bias = torch.cat((self.sampling_offsets.bias.view(samples, 2).t().flatten(), self.attention_weights.bias))
        projected = F.linear(query, weight, bias)
        offsets = projected[..., : 2 * samples].view(batch, num_queries, 2, heads, levels, points)
        weights = softmax_lastdim(projected[..., 2 * samples :].reshape(batch, num_queries, heads, levels * points))
        # ONNX has no embedding_bag with per-sample weights: an exported graph samples with grid_sample
        sample = deformable_sample_grid if torch.onnx.is_in_onnx_export() else deformable_sample
        sampled = sample(value, spatial_shapes, reference_points, offsets,
                         weights.view(batch, num_queries, heads, levels, points))
        return self.output_proj(sampled.view(batch, num_queries, channels))


def deformable_sample(
    value: Tensor, spatial_shapes: list[tuple[int, int]], reference_points: Tensor, offsets: Tensor, weights: Tensor,
) -> Tensor:
    """The attention-weighted sum of the bilinear samples of every head, level and point.

    value `[B, S, heads, D]` (the L levels flattened), reference_points `[B or 1, Q, L, 2]` (x, y in
    [0, 1]), offsets `[B, Q, 2 (x, y), heads, L, P]` in pixels of the level, weights
    `[B, Q, heads, L, P]` -> `[B, Q, heads, D]`:

        out[b, q, h] = sum_{l, p} weights[b, q, h, l, p] * bilinear(value_l[b, :, :, h], reference * size_l - 0.5 + offset)

    with pixel centres at integers and zeros outside the level: the same as `grid_sample` of each
    level at reference + offset / size (align_corners=False, padding_mode="zeros") followed by the
    weighted sum, as Deformable DETR. Written as ONE `embedding_bag` over the four corner taps of
    all L*P samples of a (query, head), each tap weighted by its bilinear weight times the attention
    weight, so no `[B*heads, D, Q, L*P]` tensor of samples is built. The levels are padded with
    zeros (1 pixel before, 2 after) and the positions clamped to [-1, size]: a tap outside a level
    then reads a padding zero or has weight zero, as in grid_sample.
    """
    batch, _, heads, head_dim = value.shape
    num_queries, levels, points = offsets.shape[1], offsets.shape[4], offsets.shape[5]
    device = offsets.device
    padded, level_starts, start, padded_total = [], [], 0, 0
    for height, width in spatial_shapes:
        level = value[:, start : start + height * width].reshape(batch, height, width, heads * head_dim)
        padded.append(F.pad(level, (0, 0, 1, 2, 1, 2)).flatten(1, 2))
        level_starts.append(padded_total)
        start += height * width
        padded_total += (height + 3) * (width + 3)
    table = torch.cat(padded, 1).view(-1, head_dim)  # row (b * S_padded + s) * heads + h
    # Corner rows are computed in floating point: exact below 2**24 in float32.
    dtype = torch.promote_types(offsets.dtype, torch.float32 if table.shape[0] < 2**24 else torch.float64)
    dtype = torch.promote_types(dtype, reference_points.dtype)

    def per_sample(values: list[list[float]]) -> Tensor:  # [L][2] or [L] -> broadcast over heads and points
        t = torch.tensor(values, device=device, dtype=dtype)
        t = t.t()[:, None, :, None] if t.dim() == 2 else t[None, :, None]
        return t.expand(*t.shape[:-3], heads, levels, points).contiguous()

    sizes = torch.tensor([[w, h] for h, w in spatial_shapes], device=device, dtype=dtype)
    centres = (reference_points.to(dtype) * sizes + 0.5).permute(0, 1, 3, 2)  # padded pixels [B or 1, Q, 2, L]
    centres = centres[:, :, :, None, :, None].expand(-1, -1, -1, heads, -1, points).contiguous()
    upper = per_sample([[w + 1, h + 1] for h, w in spatial_shapes])  # [2, heads, L, P]
    position = torch.clamp(centres + offsets, min=torch.zeros((), device=device, dtype=dtype), max=upper)
    corner = position.floor()
    frac = position - corner  # [B, Q, 2, heads, L, P]
    base = (
        torch.arange(batch, device=device, dtype=dtype)[:, None, None] * (padded_total * heads)
        + torch.tensor(level_starts, device=device, dtype=dtype) * heads
        + torch.arange(heads, device=device, dtype=dtype)[:, None]
    )[:, None, :, :, None].expand(-1, -1, -1, -1, points)  # [B, 1, heads, L, P]
    row_stride = per_sample([(w + 3) * heads for _, w in spatial_shapes])  # [heads, L, P]
    first = torch.addcmul(torch.addcmul(base, corner[:, :, 0], torch.tensor(heads, device=device, dtype=dtype)),
                          corner[:, :, 1], row_stride)  # table row of each sample's top-left tap
    index_dtype = torch.int32 if table.shape[0] < 2**31 else torch.int64
    top_left = first.to(index_dtype)
    bottom_left = top_left + row_stride.to(index_dtype)
    # Bilinear weights of the four taps times the attention weight.
    fx, fy = frac[:, :, 0], frac[:, :, 1]
    attention = weights.to(dtype)
    bottom = attention * fy
    top = attention - bottom
    top_right, bottom_right = top * fx, bottom * fx
    taps = torch.stack((top_left, top_left + heads, bottom_left, bottom_left + heads), 3)  # [B, Q, heads, 4, L, P]
    tap_weights = torch.stack((top - top_right, top_right, bottom - bottom_right, bottom_right), 3)
    out_dtype = torch.promote_types(value.dtype, weights.dtype)
    bags = batch * num_queries * heads
    sampled = WeightedRowSum.apply(table.to(out_dtype), taps.view(bags, 4, -1), tap_weights.view(bags, 4, -1).to(out_dtype))
    return sampled.view(batch, num_queries, heads, head_dim)


def deformable_sample_grid(
    value: Tensor, spatial_shapes: list[tuple[int, int]], reference_points: Tensor, offsets: Tensor, weights: Tensor,
) -> Tensor:
    """`deformable_sample` (same arguments, same result) as one `grid_sample` per level followed by
    the weighted sum, Deformable DETR's formulation: slower on the CPU, but every operation has an
    ONNX counterpart (GridSample, opset 16), so `avseg export` traces this one. -> `[B, Q, heads, D]`."""
    batch, _, heads, head_dim = value.shape
    num_queries, points = offsets.shape[1], offsets.shape[5]
    reference = reference_points.expand(batch, -1, -1, -1)  # [B, Q, L, 2]
    sampled, start = [], 0
    for level, (height, width) in enumerate(spatial_shapes):
        level_value = value[:, start : start + height * width].permute(0, 2, 3, 1).reshape(-1, head_dim, height, width)
        start += height * width
        scale = torch.tensor([width, height], dtype=offsets.dtype, device=offsets.device)
        # offsets [B, Q, 2, heads, P] of this level -> [B, Q, heads, P, 2], in units of the level's size
        location = reference[:, :, None, None, level, :] + offsets[:, :, :, :, level].permute(0, 1, 3, 4, 2) / scale
        grid = (2 * location - 1).permute(0, 2, 1, 3, 4).reshape(-1, num_queries, points, 2)  # [B*heads, Q, P, 2]
        sampled.append(F.grid_sample(level_value, grid.to(level_value.dtype), mode="bilinear",
                                     padding_mode="zeros", align_corners=False))  # [B*heads, D, Q, P]
    stacked = torch.stack(sampled, dim=3)  # [B*heads, D, Q, L, P]
    attention = weights.permute(0, 2, 1, 3, 4).reshape(-1, 1, num_queries, *weights.shape[3:])
    out = (stacked * attention.to(stacked.dtype)).sum((-2, -1))  # [B*heads, D, Q]
    return out.view(batch, heads, head_dim, num_queries).permute(0, 3, 1, 2)


class WeightedRowSum(torch.autograd.Function):
    """out[i] = sum_{t, j} weights[i, t, j] * table[rows[i, t, j]]: `F.embedding_bag(rows.flatten(1),
    table, mode="sum", per_sample_weights=weights.flatten(1))`, with a faster gradient for the table.

    rows `[bags, T, n]`: tap group t of every entry must be an order-preserving function of group 0
    (in `deformable_sample` the four corners of a sample are its top-left row plus a shift that is
    constant within a level, and never leaves the level's padded rows).

    The built-in backward accumulates the table gradient one (bag, entry) pair at a time. Here the
    entries are sorted once by their group-0 row, which sorts every group, and each group's share of
    the table gradient is one `embedding_bag` over the output gradient (row r sums weight x grad of
    the bags that read it): several times faster on the CPU. The weights' gradient,
    table[rows[i, t, j]] . grad[i], is the built-in one.
    """

    @staticmethod
    def forward(ctx, table: Tensor, rows: Tensor, weights: Tensor) -> Tensor:
        ctx.save_for_backward(table, rows, weights)
        return F.embedding_bag(rows.flatten(1), table, mode="sum", per_sample_weights=weights.flatten(1))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        table, rows, weights = ctx.saved_tensors
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad = grad.contiguous()
            order = torch.argsort(rows[:, 0].flatten(), stable=True)
            bag_of = order // rows.shape[2]
            all_rows = torch.arange(table.shape[0], device=rows.device, dtype=rows.dtype)
            for group in range(rows.shape[1]):
                sorted_rows = rows[:, group].flatten()[order]
                offsets = torch.searchsorted(sorted_rows, all_rows)  # where each table row's entries start
                part = F.embedding_bag(bag_of, grad, offsets, mode="sum",
                                       per_sample_weights=weights[:, group].flatten()[order])
                grad_table = part if grad_table is None else grad_table.add_(part)
        if ctx.needs_input_grad[2]:
            with torch.enable_grad():
                detached = weights.detach().requires_grad_()
                out = F.embedding_bag(rows.flatten(1), table.detach(), mode="sum", per_sample_weights=detached.flatten(1))
                (grad_weights,) = torch.autograd.grad(out, detached, grad)
        return grad_table, None, grad_weights


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention over all levels, then a feed-forward block (post-norm)."""

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes: list[tuple[int, int]]) -> Tensor:
        """src `[B, S, C]`; pos `[B or 1, S, C]`; reference_points `[B or 1, S, L, 2]`."""
        src = self.norm1(src + self.dropout(self.attn(src + pos, reference_points, src, spatial_shapes)))
        return self.norm2(src + self.dropout(self.ffn(src)))


def encoder_reference_points(spatial_shapes: list[tuple[int, int]], batch: int, device, dtype) -> Tensor:
    """Pixel centres of every level, normalised: `[B, S, L, 2]` (the same point on every level)."""
    points = []
    for height, width in spatial_shapes:
        ys, xs = torch.meshgrid(
            (torch.arange(height, device=device, dtype=dtype) + 0.5) / height,
            (torch.arange(width, device=device, dtype=dtype) + 0.5) / width,
            indexing="ij",
        )
        points.append(torch.stack((xs.reshape(-1), ys.reshape(-1)), -1))
    reference = torch.cat(points, 0)  # [S, 2]
    return reference[None, :, None, :].expand(batch, -1, len(spatial_shapes), -1)


class MultiScaleEncoder(nn.Module):
    """Project the stride-8/16/32 backbone maps to `d_model` and refine them jointly.

    Args:
        in_channels: channels of the backbone maps at strides 8, 16, 32.
        d_model: the model width C.
        num_layers: deformable encoder layers (0 = projections only).
    """

    def __init__(
        self, in_channels: list[int], *, d_model: int = 256, num_layers: int = 4, n_heads: int = 8,
        n_points: int = 4, ffn_dim: int = 1024, dropout: float = 0.0,
    ):
        super().__init__()
        self.d_model = d_model
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, d_model, kernel_size=1), group_norm(d_model)) for c in in_channels
        )
        self.level_embed = nn.Parameter(torch.randn(len(in_channels), d_model) * 0.02)
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(d_model, len(in_channels), n_heads, n_points, ffn_dim, dropout)
            for _ in range(num_layers)
        )

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """features: maps `[N, C_l, H_l, W_l]` at strides 8, 16, 32 (N = B*T frames).

        Returns (maps, positions): refined maps `[N, d_model, H_l, W_l]` and their sine position
        embeddings `[N, d_model, H_l, W_l]`, in the same order.
        """
        projected = [proj(feature) for proj, feature in zip(self.input_proj, features)]
        shapes = [tuple(p.shape[-2:]) for p in projected]
        batch = projected[0].shape[0]
        sines = [sine_position_embedding(h, w, self.d_model, projected[0].device, projected[0].dtype) for h, w in shapes]
        positions = [sine.unsqueeze(0).expand(batch, -1, -1, -1) for sine in sines]
        src = torch.cat([p.flatten(2).transpose(1, 2) for p in projected], 1)  # [N, S, C]
        # Positions and reference points are the same for every frame: built once, `[1, S, ...]`.
        pos = torch.cat([sine.flatten(1).t() + self.level_embed[i] for i, sine in enumerate(sines)])[None]
        if self.layers:
            reference = encoder_reference_points(shapes, 1, src.device, src.dtype)
            for layer in self.layers:
                src = layer(src, pos, reference, shapes)
        maps, start = [], 0
        for height, width in shapes:
            maps.append(src[:, start : start + height * width].transpose(1, 2).reshape(batch, -1, height, width))
            start += height * width
        return maps, positions
