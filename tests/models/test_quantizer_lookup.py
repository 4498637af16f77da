"""The codebook lookups the paper leaves open: by angle (`cosine`) and in a learned low-dimensional
space (`lookup_dim`), each checked against a computation written out here."""

import pytest
import torch
import torch.nn.functional as F

from avseg.config import load_config
from avseg.errors import UserError
from avseg.models.quantizer import SharedCodebookQuantizer


def _quantizer(**kwargs) -> SharedCodebookQuantizer:
    torch.manual_seed(0)
    return SharedCodebookQuantizer(dim=8, codebook_size=16, **kwargs)


def test_cosine_lookup_picks_the_codeword_of_the_smallest_angle():
    quantizer = _quantizer(cosine=True)
    with torch.no_grad():  # codeword norms differ widely, so nearest by distance != nearest by angle
        quantizer.codebook.mul_(torch.linspace(0.1, 10.0, 16).unsqueeze(1))
    tokens = torch.randn(4, 5, 8) * 3
    out = quantizer(tokens, update_codebook=True)
    codebook = quantizer.codebook.detach()
    angle = F.normalize(tokens.reshape(-1, 8), dim=1) @ F.normalize(codebook, dim=1).t()
    assert torch.equal(out["indices"].flatten(), angle.argmax(dim=1))
    euclid = torch.cdist(tokens.reshape(-1, 8), codebook).argmin(dim=1)
    assert not torch.equal(euclid, angle.argmax(dim=1))  # the case above tells the two rules apart
    # the token goes on as the unit codeword, and its commitment is measured between unit vectors
    unit = F.normalize(codebook, dim=1)[out["indices"]]
    assert torch.allclose(out["quantized"], unit, atol=1e-6)
    expected = ((F.normalize(tokens, dim=-1) - unit) ** 2).mean()
    assert torch.allclose(out["commitment_loss"], expected, atol=1e-6)


def test_low_dimensional_lookup_quantizes_the_projection_and_maps_it_back():
    quantizer = _quantizer(lookup_dim=3)
    assert quantizer.codebook.shape == (16, 3)
    tokens = torch.randn(2, 5, 8, requires_grad=True)
    out = quantizer(tokens, update_codebook=True)
    projected = quantizer.project_in(tokens.detach().reshape(-1, 8))
    codebook = quantizer.codebook.detach()
    expected_indices = torch.cdist(projected, codebook).argmin(dim=1)
    assert torch.equal(out["indices"].flatten(), expected_indices)
    expected = quantizer.project_out(codebook[expected_indices]).reshape(2, 5, 8)
    assert torch.allclose(out["quantized"], expected, atol=1e-6)
    assert torch.allclose(out["commitment_loss"], ((projected - codebook[expected_indices]) ** 2).mean(), atol=1e-6)
    # straight-through: the segmentation loss reaches the tokens, the in- and out-maps and the codebook
    (out["quantized"].sum() + out["codebook_loss"]).backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert quantizer.project_in.weight.grad.abs().sum() > 0
    assert quantizer.project_out.weight.grad.abs().sum() > 0
    assert quantizer.codebook.grad.abs().sum() > 0


def test_ema_and_reseeding_work_in_the_lookup_space():
    quantizer = _quantizer(lookup_dim=3, cosine=True, ema=True, kmeans_init=True, dead_code_threshold=0.5)
    tokens = torch.randn(8, 5, 8)
    quantizer.train()
    quantizer(tokens, update_codebook=True)
    seen = F.normalize(quantizer.project_in(tokens.reshape(-1, 8)), dim=1).detach()
    # k-means initialisation and re-seeding draw codewords from the normalised projections
    distance = torch.cdist(quantizer.codebook.detach(), seen).min(dim=1).values
    assert quantizer.codebook.shape == (16, 3) and bool(quantizer.initialized)
    assert distance.max() < 1.0 + 1e-4  # centroids of unit vectors lie inside the unit ball, near them


def test_the_paper_lookup_is_unchanged_by_default():
    quantizer = _quantizer()
    assert quantizer.project_in is None and quantizer.project_out is None and not quantizer.cosine
    tokens = torch.randn(3, 5, 8)
    out = quantizer(tokens, update_codebook=True)
    codebook = quantizer.codebook.detach()
    assert torch.equal(out["indices"].flatten(), torch.cdist(tokens.reshape(-1, 8), codebook).argmin(dim=1))


def test_the_config_keys_reach_the_model():
    from avseg.models.build import build_model

    config = load_config(None, ["model.backbone=r18", "model.d_model=32", "model.n_heads=4", "model.ffn_dim=64",
                                "model.num_classes=3", "audio.encoder=tiny", "model.quantizer.codebook_size=8",
                                "model.quantizer.lookup_dim=4", "model.quantizer.cosine=true"])
    model = build_model(config)
    assert model.quantizer.codebook.shape == (8, 4) and model.quantizer.cosine
    assert model.quantizer.project_in.in_features == 32
    with pytest.raises(UserError, match="model.quantizer.lookup_dim"):
        load_config(None, ["model.quantizer.lookup_dim=-1"])
