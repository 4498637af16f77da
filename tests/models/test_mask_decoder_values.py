"""QSD's semantic-guided mask decoder (Fig. 4b, Eq. 7) and the decoder layer it shares with the
ASDs, against computations written out here: the dynamic mask head pixel by pixel, the post-norm
layer with its positions and padding, the memory laid out level by level with the level
embeddings, the heads of every layer, the box centres held out of the mask gradient and the
focal-loss prior of the class head (written from the qsd package's mutation survivors,
docs/testing.md section 4)."""

import math

import pytest
import torch
import torch.nn.functional as F

from avseg.models.mask_decoder import DynamicMaskHead, MaskDecoder
from avseg.models.semantic_decoder import AudioSemanticDecoder, DecoderLayer
from by_hand import attention, feed_forward, layer_norm


def test_dynamic_mask_head_is_eq7_pixel_by_pixel():
    """CondInst: 169 parameters per query (8+2 -> 8 -> 8 -> 1, weights then bias per layer, weights
    row-major [out, in]); each pixel's input is the mask features plus its centre's offset from the
    query's box centre; ReLU between the 1x1 convolutions, none after the last."""
    torch.manual_seed(0)
    head = DynamicMaskHead(mask_dim=8)
    assert head.num_params == 169
    frames, queries, height, width = 2, 3, 3, 4
    features = torch.randn(frames, 8, height, width)
    params, centres = torch.randn(frames, queries, 169), torch.rand(frames, queries, 2)
    got = head(features, params, centres)
    assert got.shape == (frames, queries, height, width)
    for n in range(frames):
        for k in range(queries):
            p = params[n, k]
            w1, b1 = p[:80].view(8, 10), p[80:88]
            w2, b2 = p[88:152].view(8, 8), p[152:160]
            w3, b3 = p[160:168].view(1, 8), p[168:169]
            for y in range(height):
                for x in range(width):
                    offset = torch.tensor([(x + 0.5) / width - centres[n, k, 0], (y + 0.5) / height - centres[n, k, 1]])
                    pixel = torch.cat([features[n, :, y, x], offset])
                    value = w3 @ torch.relu(w2 @ torch.relu(w1 @ pixel + b1) + b2) + b3
                    assert got[n, k, y, x] == pytest.approx(float(value), abs=1e-4)


def test_decoder_layer_is_post_norm_self_then_cross_attention():
    """Positions join the queries and keys of both attentions, never the values; padded memory is
    not read; each sub-layer adds its input back before its LayerNorm."""
    torch.manual_seed(1)
    layer = _randomise_norms(DecoderLayer(8, 2, 16).eval())
    queries, query_pos = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    memory, memory_pos = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    padding = torch.tensor([[False] * 5, [False, False, True, True, True]])
    with torch.no_grad():
        got = layer(queries, memory, query_pos=query_pos, memory_pos=memory_pos, memory_padding=padding)
        q = queries + query_pos
        x = layer_norm(layer.norm1, queries + attention(layer.self_attn, q, q, queries))
        x = layer_norm(layer.norm2, x + attention(layer.cross_attn, x + query_pos, memory + memory_pos, memory, padding))
        expected = layer_norm(layer.norm3, x + feed_forward(layer.ffn, x))
        assert torch.allclose(got, expected, atol=1e-5)
        bare = layer(queries, memory)  # no positions, no padding
        x = layer_norm(layer.norm1, queries + attention(layer.self_attn, queries, queries, queries))
        x = layer_norm(layer.norm2, x + attention(layer.cross_attn, x, memory, memory))
        assert torch.allclose(bare, layer_norm(layer.norm3, x + feed_forward(layer.ffn, x)), atol=1e-5)


def test_the_semantic_decoder_runs_its_prototypes_through_every_layer():
    torch.manual_seed(2)
    decoder = _randomise_norms(AudioSemanticDecoder(8, num_tokens=4, num_layers=2, n_heads=2, ffn_dim=16).eval())
    memory = torch.randn(3, 6, 8)
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[2, 4:] = True
    with torch.no_grad():
        tokens = decoder.prototypes.weight.expand(3, -1, -1)
        for layer in decoder.layers:
            tokens = layer(tokens, memory, memory_padding=padding)
        assert torch.equal(decoder(memory, memory_padding=padding), tokens)


def _randomise_norms(module):
    """LayerNorms start as the identity on normalised inputs: give them weights that show."""
    with torch.no_grad():
        for norm in (m for m in module.modules() if isinstance(m, torch.nn.LayerNorm)):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.5)
    return module


def _decoder(layers: int = 3):
    torch.manual_seed(3)
    return _randomise_norms(MaskDecoder(d_model=8, num_classes=3, num_layers=layers, n_heads=2, ffn_dim=16, num_levels=2).eval())


def test_class_scores_start_at_the_focal_prior():
    assert torch.allclose(_decoder().class_head.bias.sigmoid(), torch.full((3,), 0.01))


def test_every_layer_reads_every_level_and_gets_its_own_heads():
    """Memory: level 0's pixels row by row, then level 1's; their positions plus the level's
    embedding. After each layer: class logits, sigmoid boxes and dynamic masks centred on the
    boxes, from the normed queries; the last layer's are the outputs, the others aux in order."""
    decoder = _decoder()
    torch.manual_seed(4)
    frames, k = 2, 3
    queries, query_pos = torch.randn(frames, k, 8), torch.randn(frames, k, 8)
    maps = [torch.randn(frames, 8, 4, 4), torch.randn(frames, 8, 2, 3)]
    positions = [torch.randn(frames, 8, 4, 4), torch.randn(frames, 8, 2, 3)]
    mask_features = torch.randn(frames, 8, 6, 6)
    with torch.no_grad():
        out = decoder(queries, maps, positions, mask_features, query_pos=query_pos)
        memory = torch.stack([torch.cat([maps[0][n, :, y, x][None] for y in range(4) for x in range(4)] +
                                        [maps[1][n, :, y, x][None] for y in range(2) for x in range(3)]) for n in range(frames)])
        memory_pos = torch.stack([torch.cat(
            [(positions[0][n, :, y, x] + decoder.level_embed[0])[None] for y in range(4) for x in range(4)] +
            [(positions[1][n, :, y, x] + decoder.level_embed[1])[None] for y in range(2) for x in range(3)])
            for n in range(frames)])
        expected, q = [], queries
        for layer in decoder.layers:
            q = layer(q, memory, query_pos=query_pos, memory_pos=memory_pos)
            hidden = layer_norm(decoder.norm, q)
            boxes = torch.sigmoid(decoder.box_head(hidden))
            masks = decoder.mask_head(mask_features, decoder.controller(hidden), boxes[..., :2])
            expected.append({"pred_logits": decoder.class_head(hidden), "pred_boxes": boxes, "pred_masks": masks})
    assert len(out["aux_outputs"]) == 2
    for got, want in ((out, expected[2]), (out["aux_outputs"][0], expected[0]), (out["aux_outputs"][1], expected[1])):
        for key in ("pred_logits", "pred_boxes", "pred_masks"):
            assert torch.allclose(got[key], want[key], atol=1e-5), key
    assert not torch.allclose(expected[0]["pred_masks"], expected[1]["pred_masks"], atol=1e-3)


def test_the_mask_loss_does_not_move_the_boxes():
    """The dynamic head is centred on detached box centres: a loss on the masks alone trains the
    controller, never the box head (DETR-style box regression stays the box loss's)."""
    decoder = _decoder(layers=2).train()
    torch.manual_seed(5)
    out = decoder(torch.randn(1, 3, 8), [torch.randn(1, 8, 2, 2)] * 2, [torch.randn(1, 8, 2, 2)] * 2,
                  torch.randn(1, 8, 4, 4))
    out["pred_masks"].square().sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in decoder.box_head.parameters())
    assert decoder.controller.layers[-1].weight.grad.abs().sum() > 0
    assert math.isclose(float(decoder.level_embed.detach().std()), 0.02, rel_tol=0.5)  # small level embeddings
