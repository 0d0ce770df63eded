"""ATLAS: the Omega rule (memory fitted to a sliding window of the last c tokens), polynomial features, Muon.

The Omega objective at token t is (1/c) Σ_{i=t−c+1..t} γ_i ‖M(φ(k_i)) − v_i‖²
(the paper sums; averaging keeps the stable step size independent of c); its
gradient replaces the single-token gradient of the online rule (c = 1 gives
back Titans' update). The window, the γ gates and the Muon update
M ← ρ M − θ NS(S) (S the momentum of the window gradients, NS = Newton–Schulz)
live in NeuralMemory's chunkwise machinery (`window`, `muon` options); inside
a chunk every window gradient is taken at the chunk-start weights, including
those of tokens from the previous chunk (their keys and values travel in the
state). The paper's γ_i^{(t)} may depend on t; here γ_i depends on token i only.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from somna.kernels.neural_memory import NeuralMemory
from somna.platform.registry import register_kernel


class PolynomialFeatures(nn.Module):
    """φ(x) = all monomials x^α with 1 ≤ |α| ≤ degree, each divided by √α!.

    The weights make φ(x)·φ(y) = Σ_{m=1..degree} (x·y)^m / m!, the Taylor
    expansion of exp(x·y) − 1: a memory over φ(k) has capacity growing like
    d^degree and approximates softmax-attention-like kernels.
    """

    def __init__(self, degree: int = 2):
        super().__init__()
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
            raise ValueError(f"degree must be a positive int, got {degree!r}")
        self.degree = degree
        self._index_cache: dict[int, list[tuple[Tensor, Tensor]]] = {}

    def out_dim(self, dim: int) -> int:
        return sum(math.comb(dim + m - 1, m) for m in range(1, self.degree + 1))

    def _monomials(self, dim: int) -> list[tuple[Tensor, Tensor]]:
        if dim not in self._index_cache:
            groups = []
            for m in range(1, self.degree + 1):
                combos = list(itertools.combinations_with_replacement(range(dim), m))
                weights = [1 / math.sqrt(math.prod(math.factorial(c.count(i)) for i in set(c))) for c in combos]
                groups.append((torch.tensor(combos), torch.tensor(weights)))
            self._index_cache[dim] = groups
        return self._index_cache[dim]

    def forward(self, x: Tensor) -> Tensor:
        features = []
        for combos, weights in self._monomials(x.shape[-1]):
            features.append(x[..., combos.to(x.device)].prod(-1) * weights.to(x))
        return torch.cat(features, dim=-1)


@register_kernel("atlas")
class Atlas(NeuralMemory):
    """ATLAS memory layer: Omega rule over the last `window` tokens, optional Muon-style updates and polynomial features.

    degree > 1 applies PolynomialFeatures(degree) to q and k. muon=True orthogonalises every token's momentum
    (the paper's ATLAS); it is off by default because that costs a Newton–Schulz run per token and weight matrix
    (measured ~60× the plain update's time on CPU); muon=False is the paper's OmegaNet.
    """

    def __init__(self, dim: int, num_heads: int = 4, *, window: int = 8, muon: bool = False, degree: int = 1, **options):
        feature_map = PolynomialFeatures(degree) if degree > 1 else None
        super().__init__(dim, num_heads, window=window, muon=muon, feature_map=feature_map, **options)
