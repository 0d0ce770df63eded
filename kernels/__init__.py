"""Test-time memory kernels (functional ops with recurrent and chunkwise forms) and the layers built on them."""

from somna.kernels.linear_attention import linear_attention
from somna.kernels.delta_rule import delta_rule, gated_delta_rule

__all__ = ["delta_rule", "gated_delta_rule", "linear_attention"]
