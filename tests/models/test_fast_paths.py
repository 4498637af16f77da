"""The fast formulations of the encoder, the recombination and the mask decoder against the direct
ones they replace: the same function (float64, to rounding), values and gradients."""

import math

import torch
import torch.nn.functional as F

from avseg.models.encoder import MSDeformAttn, MultiScaleEncoder, sine_position_embedding, softmax_lastdim
from avseg.models.mask_decoder import MaskDecoder
from avseg.models.recombination import SemanticRecombination


def grid_sample_attention(attn: MSDeformAttn, query, reference_points, value, spatial_shapes):
    """Multi-scale deformable attention as first written: one `grid_sample` per level, the samples
    stacked and weighted by the softmax of the attention logits."""
    batch, num_queries, channels = query.shape
    heads, levels, points = attn.n_heads, attn.n_levels, attn.n_points
    head_dim = channels // heads
    value = attn.value_proj(value).view(batch, -1, heads, head_dim)
    offsets = attn.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
    weights = attn.attention_weights(query).view(batch, num_queries, heads, levels * points)
    weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)
    normaliser = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype)
    locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
    grids = 2 * locations - 1
    sampled, start = [], 0
    for level, (height, width) in enumerate(spatial_shapes):
        level_value = value[:, start : start + height * width]
        start += height * width
        level_value = level_value.permute(0, 2, 3, 1).reshape(batch * heads, head_dim, height, width)
        level_grid = grids[:, :, :, level].permute(0, 2, 1, 3, 4).reshape(batch * heads, num_queries, points, 2)
        sampled.append(F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(sampled, dim=-2).flatten(-2)
    attn_weights = weights.permute(0, 2, 1, 3, 4).reshape(batch * heads, 1, num_queries, levels * points)
    out = (stacked * attn_weights).sum(-1).view(batch, heads * head_dim, num_queries)
    return attn.output_proj(out.transpose(1, 2))


def random_attention(d_model=16, levels=3, heads=4, points=3, spread=1.5):
    attn = MSDeformAttn(d_model, levels, heads, points).double()
    with torch.no_grad():  # offsets of several pixels: many samples fall partly or wholly outside their level
        attn.sampling_offsets.weight.normal_(0, spread)
        attn.sampling_offsets.bias.normal_(0, 2 * spread)
        attn.attention_weights.weight.normal_(0, 0.5)
    return attn


def grads(output, tensors):
    return torch.autograd.grad(output.square().sum(), tensors, allow_unused=True)


def test_deformable_attention_matches_grid_sample_values_and_gradients():
    torch.manual_seed(0)
    attn = random_attention()
    shapes = [(6, 7), (3, 4), (2, 1)]
    batch, num_queries = 3, 11
    value = torch.randn(batch, sum(h * w for h, w in shapes), 16, dtype=torch.float64, requires_grad=True)
    query = torch.randn(batch, num_queries, 16, dtype=torch.float64, requires_grad=True)
    reference = (torch.rand(batch, num_queries, 3, 2, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()
    inputs = [value, query, reference, *attn.parameters()]
    fast = attn(query, reference, value, shapes)
    slow = grid_sample_attention(attn, query, reference, value, shapes)
    assert torch.allclose(fast, slow, atol=1e-12, rtol=0)
    for got, want in zip(grads(fast, inputs), grads(slow, inputs)):
        assert torch.allclose(got, want, atol=1e-9, rtol=1e-9)


def test_deformable_attention_shares_a_batch_of_one_reference():
    torch.manual_seed(1)
    attn = random_attention()
    shapes = [(5, 5), (3, 3), (1, 2)]
    value = torch.randn(4, 36, 16, dtype=torch.float64)
    query = torch.randn(4, 9, 16, dtype=torch.float64)
    reference = torch.rand(1, 9, 3, 2, dtype=torch.float64)
    shared = attn(query, reference, value, shapes)
    assert torch.allclose(shared, attn(query, reference.expand(4, -1, -1, -1), value, shapes), atol=1e-14, rtol=0)
    assert torch.allclose(shared, grid_sample_attention(attn, query, reference.expand(4, -1, -1, -1), value, shapes),
                          atol=1e-12, rtol=0)


def test_deformable_attention_far_outside_reads_zeros():
    attn = MSDeformAttn(8, 1, 2, 1).double()
    with torch.no_grad():
        attn.sampling_offsets.bias.fill_(1e4)  # every sample thousands of pixels away
    value = torch.randn(1, 12, 8, dtype=torch.float64)
    out = attn(torch.randn(1, 5, 8, dtype=torch.float64), torch.rand(1, 5, 1, 2, dtype=torch.float64), value, [(3, 4)])
    assert torch.allclose(out, attn.output_proj.bias.expand_as(out))


def test_deformable_attention_low_precision_runs_close_to_float32():
    torch.manual_seed(2)
    attn = MSDeformAttn(32, 2, 4, 2)
    shapes = [(8, 8), (4, 4)]
    value, query = torch.randn(2, 80, 32), torch.randn(2, 80, 32)
    reference = torch.rand(1, 80, 2, 2)
    want = attn(query, reference, value, shapes)
    got = attn.bfloat16()(query.bfloat16(), reference.bfloat16(), value.bfloat16(), shapes)
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() < 0.1 * want.abs().max()


def test_softmax_lastdim_is_softmax():
    x = (torch.randn(3, 5, 12, dtype=torch.float64) * 30).requires_grad_()
    g = torch.randn(3, 5, 12, dtype=torch.float64)
    ours, theirs = softmax_lastdim(x), x.softmax(-1)
    assert torch.allclose(ours, theirs, atol=1e-15, rtol=0)
    assert torch.allclose(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(theirs, x, g)[0], atol=1e-14, rtol=0)


def reference_encoder(encoder: MultiScaleEncoder, features):
    """MultiScaleEncoder.forward as first written: positions and reference points expanded to every
    frame, the grid_sample attention."""
    projected = [proj(feature) for proj, feature in zip(encoder.input_proj, features)]
    shapes = [tuple(p.shape[-2:]) for p in projected]
    batch = projected[0].shape[0]
    positions = [sine_position_embedding(h, w, encoder.d_model, dtype=torch.float64).unsqueeze(0).expand(batch, -1, -1, -1)
                 for h, w in shapes]
    src = torch.cat([p.flatten(2).transpose(1, 2) for p in projected], 1)
    pos = torch.cat([(p.flatten(2).transpose(1, 2) + encoder.level_embed[i]) for i, p in enumerate(positions)], 1)
    points = []
    for height, width in shapes:
        ys, xs = torch.meshgrid((torch.arange(height, dtype=torch.float64) + 0.5) / height,
                                (torch.arange(width, dtype=torch.float64) + 0.5) / width, indexing="ij")
        points.append(torch.stack((xs.reshape(-1), ys.reshape(-1)), -1))
    reference = torch.cat(points, 0)[None, :, None, :].expand(batch, -1, len(shapes), -1)
    for layer in encoder.layers:
        attended = grid_sample_attention(layer.attn, src + pos, reference, src, shapes)
        src = layer.norm1(src + attended)
        src = layer.norm2(src + layer.ffn(src))
    maps, start = [], 0
    for height, width in shapes:
        maps.append(src[:, start : start + height * width].transpose(1, 2).reshape(batch, -1, height, width))
        start += height * width
    return maps, positions


def test_encoder_matches_the_direct_formulation():
    torch.manual_seed(3)
    encoder = MultiScaleEncoder([6, 10, 12], d_model=16, num_layers=2, n_heads=4, n_points=2, ffn_dim=32).double()
    for layer in encoder.layers:
        with torch.no_grad():
            layer.attn.sampling_offsets.weight.normal_(0, 0.5)
            layer.attn.attention_weights.weight.normal_(0, 0.5)
    features = [torch.randn(3, c, h, w, dtype=torch.float64, requires_grad=True)
                for c, (h, w) in zip((6, 10, 12), ((8, 6), (4, 3), (2, 2)))]
    maps, positions = encoder(features)
    ref_maps, ref_positions = reference_encoder(encoder, features)
    for got, want in zip(maps + positions, ref_maps + ref_positions):
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-12, rtol=0)
    inputs = features + list(encoder.parameters())
    torch.manual_seed(4)
    loss = sum((m * torch.randn_like(m)).sum() for m in maps)
    torch.manual_seed(4)
    ref_loss = sum((m * torch.randn_like(m)).sum() for m in ref_maps)
    for got, want in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(ref_loss, inputs)):
        assert torch.allclose(got, want, atol=1e-9, rtol=1e-9)


def test_recombination_matches_eq5_written_directly():
    torch.manual_seed(5)
    module = SemanticRecombination(8, 3, 2).double()
    maps = [torch.randn(4, 8, 5, 6, dtype=torch.float64, requires_grad=True),
            torch.randn(4, 8, 2, 3, dtype=torch.float64, requires_grad=True)]
    tokens = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)  # clip tokens, 2 frames each
    for training in (True, False):
        module.train(training)
        fast, slow = module(maps, tokens), module.naive_forward(maps, tokens)
        inputs = maps + [tokens] + list(module.parameters())
        for got, want in zip(fast, slow):
            assert torch.allclose(got, want, atol=1e-12, rtol=0)
        weights = [torch.randn_like(m) for m in fast]
        got = torch.autograd.grad(sum((w * m).sum() for w, m in zip(weights, fast)), inputs)
        want = torch.autograd.grad(sum((w * m).sum() for w, m in zip(weights, slow)), inputs)
        for a, b in zip(got, want):
            assert torch.allclose(a, b, atol=1e-10, rtol=1e-10)


def test_mask_decoder_shared_positions_equal_per_frame_positions():
    torch.manual_seed(6)
    decoder = MaskDecoder(d_model=16, num_classes=3, num_layers=2, n_heads=4, ffn_dim=32, num_levels=2).double().eval()
    maps = [torch.randn(3, 16, 4, 4, dtype=torch.float64), torch.randn(3, 16, 2, 2, dtype=torch.float64)]
    shared = [sine_position_embedding(h, w, 16, dtype=torch.float64).unsqueeze(0).expand(3, -1, -1, -1) for h, w in ((4, 4), (2, 2))]
    per_frame = [p.contiguous() for p in shared]
    queries = torch.randn(3, 5, 16, dtype=torch.float64)
    mask_features = torch.randn(3, 8, 8, 8, dtype=torch.float64)
    a = decoder(queries, maps, shared, mask_features)
    b = decoder(queries, maps, per_frame, mask_features)
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        assert torch.allclose(a[key], b[key], atol=1e-12, rtol=0)
    assert math.isfinite(a["pred_masks"].sum().item())


def test_grid_sample_form_used_for_onnx_export_equals_the_fast_form():
    """`deformable_sample_grid` (what `avseg export` traces) is the same function as `deformable_sample`."""
    from avseg.models.encoder import deformable_sample, deformable_sample_grid

    torch.manual_seed(0)
    shapes = [(6, 7), (3, 4), (2, 1)]
    batch, queries, heads, dim, points = 3, 11, 4, 5, 3
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, dim, dtype=torch.float64)
    offsets = torch.randn(batch, queries, 2, heads, len(shapes), points, dtype=torch.float64) * 3
    weights = torch.rand(batch, queries, heads, len(shapes), points, dtype=torch.float64)
    for ref_batch in (1, batch):  # shared and per-item reference points
        reference = torch.rand(ref_batch, queries, len(shapes), 2, dtype=torch.float64) * 1.4 - 0.2
        fast = deformable_sample(value, shapes, reference, offsets, weights)
        assert torch.allclose(deformable_sample_grid(value, shapes, reference, offsets, weights), fast,
                              atol=1e-12, rtol=0)
