"""Test-time memory kernels (functional ops with recurrent and chunkwise forms) and the layers built on them."""

from somna.kernels.linear_attention import linear_attention
from somna.kernels.delta_rule import delta_rule, gated_delta_rule
from somna.kernels.seq_layers import DeltaNet, GatedDeltaNet, LinearAttention  # registers the three layers
from somna.kernels.neural_memory import NeuralMemory  # registers titans
from somna.kernels.miras import Memora, Moneta, Yaad  # registers moneta, yaad, memora
from somna.kernels.atlas import Atlas  # registers atlas

__all__ = [
    "Atlas",
    "Memora",
    "Moneta",
    "NeuralMemory",
    "Yaad",
    "DeltaNet", "GatedDeltaNet", "LinearAttention", "delta_rule", "gated_delta_rule", "linear_attention"]
