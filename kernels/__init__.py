"""Test-time memory kernels (functional ops with recurrent and chunkwise forms) and the layers built on them."""

from somna.kernels.linear_attention import linear_attention
from somna.kernels.delta_rule import delta_rule, gated_delta_rule
from somna.kernels.seq_layers import DeltaNet, GatedDeltaNet, LinearAttention  # registers the three layers
from somna.kernels.neural_memory import NeuralMemory  # registers titans
from somna.kernels.miras import Memora, Moneta, Yaad  # registers moneta, yaad, memora
from somna.kernels.atlas import Atlas  # registers atlas
from somna.kernels.cms import ContinuumMemory  # registers cms
from somna.kernels.self_modifying import SelfModifyingMemory  # registers self-modifying
from somna.kernels.titans_layers import TitansMAC, TitansMAG, TitansMAL  # registers titans-mac, -mag, -mal
from somna.kernels.hope import HopeBlock  # registers hope
from somna.kernels.newton_schulz import newton_schulz

__all__ = [
    "Atlas",
    "ContinuumMemory",
    "DeltaNet",
    "GatedDeltaNet",
    "HopeBlock",
    "LinearAttention",
    "Memora",
    "Moneta",
    "NeuralMemory",
    "SelfModifyingMemory",
    "TitansMAC",
    "TitansMAG",
    "TitansMAL",
    "Yaad",
    "delta_rule",
    "gated_delta_rule",
    "linear_attention",
    "newton_schulz",
]
