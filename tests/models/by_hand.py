"""Transformer pieces written out by hand, for the value tests of QSD's parts (torch's own
modules are only read for their weights)."""

import math

import torch


def heads_of(x, heads: int, dim: int):
    """`[N, L, heads * dim]` -> `[N, heads, L, dim]`."""
    return x.view(x.shape[0], x.shape[1], heads, dim).transpose(1, 2)


def attention(mha: torch.nn.MultiheadAttention, q, k, v, padding=None):
    """nn.MultiheadAttention written out: projections, per-head softmax(QK^T / sqrt(d)), output."""
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    bq, bk, bv = mha.in_proj_bias.chunk(3)
    heads, dim = mha.num_heads, mha.embed_dim // mha.num_heads
    qh, kh, vh = (heads_of(x, heads, dim) for x in (q @ wq.T + bq, k @ wk.T + bk, v @ wv.T + bv))
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(dim)
    if padding is not None:
        scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
    out = (scores.softmax(-1) @ vh).transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)
    return out @ mha.out_proj.weight.T + mha.out_proj.bias


def layer_norm(layer: torch.nn.LayerNorm, x):
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + layer.eps) * layer.weight + layer.bias


def feed_forward(ffn: torch.nn.Sequential, x):
    """avseg's feed-forward block: Linear, ReLU, (dropout), Linear."""
    first, last = ffn[0], ffn[-1]
    return torch.relu(x @ first.weight.T + first.bias) @ last.weight.T + last.bias
