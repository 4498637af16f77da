"""The shared codebook of QSD: product quantization of the K semantic tokens (Eq. 2, Eq. 9).

ONE codebook E `[M, C]` serves all K tokens: each token is replaced by its nearest codeword
(squared Euclidean distance, computed in fp32 with autocast off) and gradients pass through
with the straight-through estimator, `quantized = tokens + (E[j] - tokens).detach()`.

Two kinds of callers:
- global tokens (`update_codebook=True`): the only ones that move the codebook, through
  `codebook_loss = ||sg[S] - E_sel||^2` (gradient mode) or the EMA update (EMA mode), and the only
  ones that feed k-means initialisation, dead-code statistics and dead-code re-seeding;
- local tokens (`update_codebook=False`): quantized with the same codebook but only
  `commitment_loss = ||L - sg[E_sel]||^2` applies; no gradient ever reaches E and no statistic
  changes.

Two lookup choices the paper leaves open (docs/study.md, "The codebook collapse"), both off by
default: `lookup_dim` d > 0 quantizes in a learned d-dimensional space (a linear map in, the
codebook `[M, d]`, a linear map out to C, as ViT-VQGAN's factorized codes and the `codebook_dim`
of vector-quantize-pytorch); `cosine` l2-normalises the looked-up vectors and the codewords
(nearest by angle). Everything else (losses, EMA, k-means, re-seeding) then works in that space.

Squared norms are averaged over all elements (tokens x channels), as in VQ-VAE implementations.
Codebook statistics (EMA sums and counts, dead-code counts) are all-reduced over the process
group when torch.distributed is initialised, so every rank keeps the same codebook; this needs
every rank to make the same sequence of global calls in training mode (true for SPMD training).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from avseg.distributed import initialized


def _distributed() -> bool:
    return initialized()


def _all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum `tensor` over all ranks in place; a no-op without an initialised process group."""
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _broadcast_from_rank0(tensor: Tensor) -> Tensor:
    """Make every rank hold rank 0's `tensor` (in place); a no-op without a process group."""
    if _distributed():
        dist.broadcast(tensor, src=0)
    return tensor


def _mean_squared_error(inputs: Tensor, targets: Tensor) -> Tensor:
    """Mean of (inputs - targets)^2 over all elements; 0 (not NaN) when there are none."""
    if inputs.numel() == 0:
        return (inputs * 0).sum()
    return F.mse_loss(inputs, targets)


def squared_distances(vectors: Tensor, codebook: Tensor) -> Tensor:
    """Squared Euclidean distances `[n, M]` between `vectors [n, C]` and `codebook [M, C]`."""
    return (
        vectors.pow(2).sum(dim=1, keepdim=True)
        - 2.0 * vectors @ codebook.t()
        + codebook.pow(2).sum(dim=1).unsqueeze(0)
    )


def sample_vectors(vectors: Tensor, num: int) -> Tensor:
    """`num` rows of `vectors [n, C]` drawn at random (without replacement when n >= num)."""
    n = vectors.shape[0]
    if n >= num:
        index = torch.randperm(n, device=vectors.device)[:num]
    else:
        index = torch.randint(0, n, (num,), device=vectors.device)
    return vectors[index]


def kmeans_plus_plus(vectors: Tensor, num_clusters: int) -> Tensor:
    """k-means++ seeding: `num_clusters` rows of `vectors [n, C]` drawn with D^2 weights.

    Once every distinct vector is taken (n small), the rest are drawn uniformly (repeats).
    """
    chosen = [int(torch.randint(0, vectors.shape[0], ()))]
    nearest = squared_distances(vectors, vectors[chosen[0]].unsqueeze(0)).squeeze(1).clamp(min=0)
    for _ in range(num_clusters - 1):
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        chosen.append(int(torch.multinomial(weights, 1)))
        new = squared_distances(vectors, vectors[chosen[-1]].unsqueeze(0)).squeeze(1)
        nearest = torch.minimum(nearest, new.clamp(min=0))
    return vectors[chosen].clone()


def kmeans(vectors: Tensor, num_clusters: int, iters: int) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on `vectors [n, C]` (fp32), seeded with k-means++.

    Returns centroids `[num_clusters, C]` and the number of vectors in each cluster
    `[num_clusters]`. An empty cluster keeps its centroid.
    """
    centroids = kmeans_plus_plus(vectors, num_clusters)
    counts = torch.zeros(num_clusters, device=vectors.device, dtype=vectors.dtype)
    for _ in range(iters):
        assignment = squared_distances(vectors, centroids).argmin(dim=1)
        counts = torch.bincount(assignment, minlength=num_clusters).to(vectors.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, vectors)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
    return centroids, counts


class SharedCodebookQuantizer(nn.Module):
    """Nearest-codeword quantizer with one codebook shared by every semantic token.

    Args:
        dim: token width C.
        codebook_size: number of codewords M (the paper: 128, about the number of sound classes).
        ema: update E by exponential moving averages of assigned tokens (VQ-VAE-2 style) instead
            of by the gradient of `codebook_loss`; E then has no gradient and `codebook_loss` is 0.
        decay: EMA decay of the cluster sizes, embedding sums and dead-code statistics.
        eps: Laplace smoothing of the EMA cluster sizes.
        dead_code_threshold: a code whose EMA usage count (global tokens per training batch)
            falls below this is re-seeded with a random global token of the current batch;
            0 disables re-seeding.
        kmeans_init: initialise E from the first training batch of global tokens with k-means.
        kmeans_iters: Lloyd iterations of that initialisation.
        lookup_dim: 0 (the paper: codewords of width C) or d: tokens are mapped to d dimensions by
            a linear layer, quantized there with a codebook `[M, d]` and mapped back to C.
        cosine: l2-normalise the vectors and the codewords before the lookup and the losses.
    """

    def __init__(
        self,
        *,
        dim: int,
        codebook_size: int = 128,
        ema: bool = False,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_code_threshold: float = 0.0,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        lookup_dim: int = 0,
        cosine: bool = False,
    ) -> None:
        super().__init__()
        if lookup_dim < 0:
            raise ValueError(f"lookup_dim must be 0 (off) or positive, got {lookup_dim}")
        self.dim = dim
        self.lookup_dim = lookup_dim
        self.cosine = cosine
        code_dim = lookup_dim or dim
        self.project_in = nn.Linear(dim, lookup_dim) if lookup_dim else None
        self.project_out = nn.Linear(lookup_dim, dim) if lookup_dim else None
        self.codebook_size = codebook_size
        self.ema = ema
        self.decay = decay
        self.eps = eps
        self.dead_code_threshold = dead_code_threshold
        self.kmeans_iters = kmeans_iters
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim), requires_grad=not ema)
        # EMA statistics. cluster_size also drives dead-code detection in gradient mode;
        # embed_sum is only read in EMA mode.
        # Starting at ones / the codebook itself keeps E = embed_sum / cluster_size from step 0.
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", self.codebook.detach().clone())
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        # Running usage counts for logging (not saved in checkpoints).
        self.register_buffer("global_counts", torch.zeros(codebook_size), persistent=False)
        self.register_buffer("local_counts", torch.zeros(codebook_size), persistent=False)

    def forward(self, tokens: Tensor, *, update_codebook: bool, local: bool | None = None) -> dict[str, Tensor]:
        """Quantize `tokens [..., C]` (e.g. global `[B, K, C]`, local `[B, T, K, C]`).

        `local` says which running usage histogram counts the call (default: `not update_codebook`).

        Returns a dict:
            quantized: `[..., C]`, dtype of `tokens`, straight-through (gradient w.r.t. it goes
                to `tokens` unchanged, never to E).
            indices: int64 `[...]`, the chosen codeword of each token.
            codebook_loss: scalar, mean ||sg[tokens] - E_sel||^2; the only term with a gradient
                to E. Zero (no gradient) for local tokens and in EMA mode.
            commitment_loss: scalar, mean ||tokens - sg[E_sel]||^2.
            perplexity: scalar, exp(entropy) of this call's code-usage distribution (1 .. M).
            usage: scalar, fraction of the M codes used by this call.
        """
        if tokens.shape[-1] != self.dim:
            raise ValueError(f"tokens have width {tokens.shape[-1]}, the codebook has {self.dim}")
        learn = update_codebook and self.training
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            flat = self._lookup_space(tokens.reshape(-1, self.dim).float())
            if learn and not bool(self.initialized):
                self._kmeans_initialize(flat.detach())
            trains_codebook = update_codebook and not self.ema
            weight = self._codewords(self.codebook if trains_codebook else self.codebook.detach())
            with torch.no_grad():
                indices = squared_distances(flat, weight.detach()).argmin(dim=1)
            selected = F.embedding(indices, weight).float()  # [n, C] (or [n, d])
            commitment_loss = _mean_squared_error(flat, selected.detach())
            if trains_codebook:
                codebook_loss = _mean_squared_error(selected, flat.detach())
            else:
                codebook_loss = flat.new_zeros(())
            counts = torch.bincount(indices, minlength=self.codebook_size).float()
            if learn:
                self._update_statistics(flat.detach(), indices, counts)
        if self.project_out is None:
            quantized = tokens + (selected.to(tokens.dtype).reshape(tokens.shape) - tokens).detach()
        else:  # straight-through in the lookup space, then back to C
            with torch.autocast(device_type=tokens.device.type, enabled=False):
                out = self.project_out(flat + (selected - flat).detach())
            quantized = out.to(tokens.dtype).reshape(tokens.shape)
        local = not update_codebook if local is None else local
        (self.local_counts if local else self.global_counts).add_(counts)
        probs = counts / counts.sum().clamp(min=1.0)
        entropy = -(probs * torch.log(probs.clamp(min=1e-12))).sum()
        return {
            "quantized": quantized,
            "indices": indices.reshape(tokens.shape[:-1]),
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment_loss,
            "perplexity": entropy.exp(),
            "usage": (counts > 0).float().mean(),
        }

    def _lookup_space(self, flat: Tensor) -> Tensor:
        """Tokens `[n, C]` as the codebook sees them: mapped to d dims and / or normalised."""
        if self.project_in is not None:
            flat = self.project_in(flat)
        return F.normalize(flat, dim=1) if self.cosine else flat

    def _codewords(self, weight: Tensor) -> Tensor:
        """The codewords the lookup compares with: E itself, or E's rows normalised (`cosine`)."""
        return F.normalize(weight.float(), dim=1) if self.cosine else weight.float()

    @torch.no_grad()
    def _kmeans_initialize(self, flat: Tensor) -> None:
        """Set E to k-means centroids of the first batch of global tokens `[n, C]`."""
        centroids, _ = kmeans(flat, self.codebook_size, self.kmeans_iters)
        _broadcast_from_rank0(centroids)
        self.codebook.data.copy_(centroids)
        self.embed_sum.copy_(centroids)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update_statistics(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        """EMA updates and dead-code re-seeding from global tokens `flat [n, C]`."""
        counts = _all_reduce_sum(counts.clone())
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        if self.ema:
            sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, flat)
            _all_reduce_sum(sums)
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
            total = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps)
            smoothed = smoothed * total
            self.codebook.data.copy_(self.embed_sum / smoothed.unsqueeze(1))
        if self.dead_code_threshold > 0:
            self._reseed_dead_codes(flat)

    @torch.no_grad()
    def _reseed_dead_codes(self, flat: Tensor) -> None:
        """Replace codes used less than `dead_code_threshold` (EMA count) by random tokens."""
        dead = self.cluster_size < self.dead_code_threshold  # same on every rank (all-reduced)
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        seeds = sample_vectors(flat, num_dead)
        _broadcast_from_rank0(seeds)
        self.codebook.data[dead] = seeds
        self.cluster_size[dead] = self.dead_code_threshold
        self.embed_sum[dead] = seeds * self.dead_code_threshold

    def usage_histogram(self, *, local: bool = False) -> Tensor:
        """Running count of assignments per code `[M]` since the last `reset_usage()`.

        Counts come from this rank's calls only: global tokens, or local tokens with `local`.
        """
        return (self.local_counts if local else self.global_counts).clone()

    def reset_usage(self) -> None:
        """Zero the running usage counts (e.g. at the start of each logging interval)."""
        self.global_counts.zero_()
        self.local_counts.zero_()

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, ema={self.ema}, "
            f"decay={self.decay}, dead_code_threshold={self.dead_code_threshold}, "
            f"lookup_dim={self.lookup_dim}, cosine={self.cosine}"
        )
