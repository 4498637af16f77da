"""Multi-scale deformable encoder: the deformable attention against a hand-written bilinear sampler."""

import numpy as np
import torch

from avseg.models.encoder import MSDeformAttn, MultiScaleEncoder, sine_position_embedding


def bilinear(value: np.ndarray, x: float, y: float) -> np.ndarray:
    """Sample value [D, H, W] at normalised (x, y) with zero padding, pixel centres at (i + 0.5) / size."""
    _, height, width = value.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = int(np.floor(px)), int(np.floor(py))
    out = np.zeros(value.shape[0])
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
            if 0 <= xi < width and 0 <= yi < height:
                out += weight * value[:, yi, xi]
    return out


def test_deformable_attention_matches_manual_sampling():
    torch.manual_seed(0)
    d_model, heads, levels, points = 8, 2, 2, 3
    attn = MSDeformAttn(d_model, levels, heads, points).double()
    with torch.no_grad():
        for layer in (attn.sampling_offsets, attn.attention_weights):
            layer.weight.normal_(0, 0.3)
            layer.bias.normal_(0, 0.3)
    shapes = [(4, 5), (2, 3)]
    value = torch.randn(1, sum(h * w for h, w in shapes), d_model, dtype=torch.float64)
    query = torch.randn(1, 2, d_model, dtype=torch.float64)
    reference = torch.rand(1, 2, levels, 2, dtype=torch.float64)
    out = attn(query, reference, value, shapes)

    head_dim = d_model // heads
    projected = attn.value_proj(value)[0].detach().numpy()
    offsets = attn.sampling_offsets(query).view(1, 2, heads, levels, points, 2)[0].detach().numpy()
    weights = attn.attention_weights(query).view(1, 2, heads, levels * points).softmax(-1)
    weights = weights.view(1, 2, heads, levels, points)[0].detach().numpy()
    expected = np.zeros((2, d_model))
    for q in range(2):
        for h in range(heads):
            start = 0
            for level, (height, width) in enumerate(shapes):
                level_value = projected[start : start + height * width, h * head_dim : (h + 1) * head_dim]
                level_value = level_value.T.reshape(head_dim, height, width)
                start += height * width
                for p in range(points):
                    x = reference[0, q, level, 0].item() + offsets[q, h, level, p, 0] / width
                    y = reference[0, q, level, 1].item() + offsets[q, h, level, p, 1] / height
                    expected[q, h * head_dim : (h + 1) * head_dim] += weights[q, h, level, p] * bilinear(level_value, x, y)
    expected = attn.output_proj(torch.from_numpy(expected)).detach()
    assert torch.allclose(out[0].detach(), expected, atol=1e-10)


def test_encoder_shapes_and_gradients():
    encoder = MultiScaleEncoder([16, 32, 64], d_model=32, num_layers=2, n_heads=4, n_points=2, ffn_dim=64)
    features = [torch.randn(3, c, s, s, requires_grad=True) for c, s in ((16, 8), (32, 4), (64, 2))]
    maps, positions = encoder(features)
    assert [tuple(m.shape) for m in maps] == [(3, 32, 8, 8), (3, 32, 4, 4), (3, 32, 2, 2)]
    assert positions[0].shape == maps[0].shape
    maps[0].sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features)  # every level mixes in


def test_sine_embedding_distinguishes_positions():
    emb = sine_position_embedding(4, 6, 16)
    assert emb.shape == (16, 4, 6)
    flat = emb.flatten(1).T
    assert torch.cdist(flat, flat).fill_diagonal_(1).min() > 1e-3
