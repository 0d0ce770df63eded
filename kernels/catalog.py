"""Every built-in kernel in one import: the functional ops and the layers, each layer registered by name.

Test-time memory kernels (functional ops with recurrent and chunkwise forms) and the layers built on
them live one per module beside this one. `kernels/` itself has no `__init__.py`, like `platform/`:
transformers imports the Hugging Face package `kernels`, and a `python` started at the repository
root (or a Ray worker, which gets the driver's directory on its path) would import this folder in its
place. As a namespace portion it loses to any installed `kernels`; `somna.kernels.<module>` imports
as usual, and this module is what `somna kernels` and the registry import to find the built-ins.
"""

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
