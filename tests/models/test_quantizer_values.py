"""The quantizer's helpers (sampling, k-means++, k-means), defaults, checks and statistics, each
against a value worked out here. Written from the quantizer's mutation survivors
(docs/testing.md section 4)."""

from __future__ import annotations

import math

import pytest
import torch

from avseg.models.quantizer import SharedCodebookQuantizer, kmeans, kmeans_plus_plus, sample_vectors


def _rows(tensor: torch.Tensor) -> list[tuple[float, ...]]:
    return [tuple(row) for row in tensor.tolist()]


def test_sample_vectors_without_replacement_when_there_are_enough():
    vectors = torch.arange(20.0).view(10, 2)  # more rows than columns, and the other way round below
    for seed in range(5):
        torch.manual_seed(seed)
        drawn = sample_vectors(vectors, 10)  # as many as there are: a permutation, no repeats
        assert sorted(_rows(drawn)) == sorted(_rows(vectors))
        torch.manual_seed(seed)
        four = sample_vectors(vectors, 4)
        assert len(set(_rows(four))) == 4 and set(_rows(four)) <= set(_rows(vectors))
    wide = torch.arange(24.0).view(3, 8)
    torch.manual_seed(0)
    drawn = sample_vectors(wide, 7)  # fewer rows than wanted: repeats, all rows of `wide`
    assert drawn.shape == (7, 8) and set(_rows(drawn)) <= set(_rows(wide))
    torch.manual_seed(0)
    assert _rows(sample_vectors(wide[:1], 3)) == _rows(wide[:1]) * 3


def test_kmeans_plus_plus_never_repeats_a_chosen_vector_while_others_are_left():
    """D^2 weighting: a chosen vector has weight 0, even among points closer than 1 apart."""
    vectors = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1]])
    for seed in range(10):
        torch.manual_seed(seed)
        assert len(set(_rows(kmeans_plus_plus(vectors, 4)))) == 4
    wide = torch.randn(2, 8)  # fewer vectors than their width
    torch.manual_seed(0)
    assert set(_rows(kmeans_plus_plus(wide, 2))) == set(_rows(wide))
    same = torch.ones(3, 2)  # every distance 0: the rest are drawn uniformly
    assert _rows(kmeans_plus_plus(same, 3)) == [(1.0, 1.0)] * 3
    torch.manual_seed(0)
    assert _rows(kmeans_plus_plus(torch.tensor([[2.0, 5.0]]), 3)) == [(2.0, 5.0)] * 3


def test_kmeans_counts_and_centroids():
    vectors = torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0], [10.0, 2.0]], dtype=torch.float64)
    torch.manual_seed(0)
    centroids, counts = kmeans(vectors, 2, iters=5)
    assert counts.dtype == torch.float64 and sorted(counts.tolist()) == [2.0, 3.0]
    assert sorted(_rows(centroids)) == [(0.0, 0.5), (10.0, 1.0)]
    unrun, zero = kmeans(vectors, 2, iters=0)  # no Lloyd step: k-means++ seeds, no counts yet
    assert zero.dtype == torch.float64 and zero.tolist() == [0.0, 0.0]
    assert set(_rows(unrun)) <= set(_rows(vectors))
    same, counts = kmeans(torch.ones(3, 2), 3, iters=2)  # two clusters stay empty
    assert torch.isfinite(same).all() and _rows(same) == [(1.0, 1.0)] * 3
    assert sorted(counts.tolist()) == [0.0, 0.0, 3.0]


def test_defaults_are_the_papers():
    quantizer = SharedCodebookQuantizer(dim=8)
    assert quantizer.codebook.shape == (128, 8)  # M = 128, about the number of sound classes
    assert quantizer.decay == 0.99 and quantizer.kmeans_iters == 10
    assert quantizer.project_in is None and quantizer.cosine is False and quantizer.lookup_dim == 0


def test_checks_name_the_problem():
    with pytest.raises(ValueError, match=r"^lookup_dim must be 0 \(off\) or positive, got -2$"):
        SharedCodebookQuantizer(dim=8, lookup_dim=-2)
    quantizer = SharedCodebookQuantizer(dim=8, codebook_size=4)
    with pytest.raises(ValueError, match=r"^tokens have width 6, the codebook has 8$"):
        quantizer(torch.zeros(2, 3, 6), update_codebook=False)


def test_low_dimensional_lookup_layers_have_the_right_shapes():
    quantizer = SharedCodebookQuantizer(dim=8, codebook_size=4, lookup_dim=3)
    assert quantizer.codebook.shape == (4, 3)
    assert quantizer.project_in.weight.shape == (3, 8) and quantizer.project_out.weight.shape == (8, 3)


def test_usage_counts_are_not_saved_in_checkpoints():
    keys = set(SharedCodebookQuantizer(dim=8, codebook_size=4).state_dict())
    assert keys == {"codebook", "cluster_size", "embed_sum", "initialized"}


def _two_codeword_quantizer() -> SharedCodebookQuantizer:
    quantizer = SharedCodebookQuantizer(dim=2, codebook_size=4)
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]]))
    return quantizer


def test_perplexity_and_usage_of_small_calls():
    quantizer = _two_codeword_quantizer()
    one = quantizer(torch.tensor([[0.1, 0.2]]), update_codebook=False)
    assert float(one["perplexity"]) == pytest.approx(1.0) and float(one["usage"]) == 0.25
    two = quantizer(torch.tensor([[0.1, 0.2], [4.9, 0.1]]), update_codebook=False)
    assert float(two["perplexity"]) == pytest.approx(2.0) and float(two["usage"]) == 0.5
    uneven = quantizer(torch.tensor([[0.1, 0.2], [0.2, 0.1], [4.9, 0.1]]), update_codebook=False)
    entropy = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert float(uneven["perplexity"]) == pytest.approx(math.exp(entropy), rel=1e-6)


def test_an_explicit_local_flag_picks_the_histogram():
    quantizer = _two_codeword_quantizer().eval()
    quantizer(torch.tensor([[4.9, 0.1]]), update_codebook=True, local=True)
    quantizer(torch.tensor([[0.1, 4.9]]), update_codebook=False, local=False)
    assert quantizer.usage_histogram(local=True).tolist() == [0.0, 1.0, 0.0, 0.0]
    assert quantizer.usage_histogram().tolist() == [0.0, 0.0, 1.0, 0.0]


def _rank_tokens(rank: int) -> torch.Tensor:
    return torch.randn(6, 5, 4, generator=torch.Generator().manual_seed(100 + rank)) + 2 * rank


def _shared_quantizer() -> SharedCodebookQuantizer:
    torch.manual_seed(0)
    return SharedCodebookQuantizer(dim=4, codebook_size=8, ema=True, decay=0.5, kmeans_init=True)


def _ddp_worker(rank: int, world: int, init_file: str, results: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        quantizer = _shared_quantizer()
        quantizer(_rank_tokens(rank), update_codebook=True)  # k-means on rank 0's tokens, then one EMA step
        torch.save(quantizer.state_dict(), f"{results}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process_that_sees_both_ranks_tokens(tmp_path):
    """k-means seeds come from rank 0 (broadcast); the EMA statistics are summed over the ranks."""
    import torch.multiprocessing as mp

    results = str(tmp_path / "state")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    reference = _shared_quantizer()
    reference._kmeans_initialize(_rank_tokens(0).reshape(-1, 4))  # the same draws as rank 0's
    reference(torch.cat([_rank_tokens(0), _rank_tokens(1)]), update_codebook=True)
    for rank in range(2):
        state = torch.load(f"{results}.{rank}", weights_only=True)
        for key, value in reference.state_dict().items():
            assert torch.allclose(state[key].float(), value.float(), atol=1e-5), (rank, key)


def test_low_dimensional_lookup_returns_the_tokens_dtype():
    quantizer = SharedCodebookQuantizer(dim=8, codebook_size=4, lookup_dim=3)
    out = quantizer(torch.randn(2, 3, 8).to(torch.bfloat16), update_codebook=False)
    assert out["quantized"].dtype == torch.bfloat16 and out["quantized"].shape == (2, 3, 8)
