"""Readable references for the memory layers: token by token, inner gradients by autograd (fla's naive.py).

Each function here computes what a fast form computes, written the way the
equations read, so the tests can compare outputs, final states and every outer
gradient (they differentiate through `create_graph=True`). They share nothing
with the fast forms but the definitions of the attentional bias
(`output_error`, ∂ℓ/∂M(k)) and the retention read map, and the layers'
projections and parameters.

  memory_reference         the Titans / Miras / ATLAS inner loop of memory_scan.py
  neural_memory_reference  a NeuralMemory-family layer (projections, gates, that loop)
  self_modifying_reference SelfModifyingMemory (Nested Learning eq. 79–88)
  cms_reference            ContinuumMemory (eq. 70–74)
  hope_reference           HopeBlock (eq. 94–97)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from somna.kernels.memory_scan import Gates, MemoryRule
from somna.kernels.newton_schulz import newton_schulz


def mlp(weights: list[Tensor], x: Tensor) -> Tensor:
    """One token per (batch, head): x (B, H, d_in), weights (B, H, d_in, d_out), SiLU between layers."""
    for index, w in enumerate(weights):
        x = torch.einsum("bhi,bhio->bho", x, w)
        if index < len(weights) - 1:
            x = F.silu(x)
    return x


def token_gradient(weights: list[Tensor], key: Tensor, value: Tensor, rule: MemoryRule) -> list[Tensor]:
    """∇_W ℓ(M_W(k); v) for one token per (batch, head), clipped to rule.max_grad_norm (all layers together)."""
    # Differentiate at W + 0 with respect to the 0: only the path through the MLP's weights counts, not that
    # through k or v (the self-modifying memory makes them with the same weights); create_graph keeps the
    # result differentiable for the outer loop.
    at = [torch.zeros_like(w, requires_grad=True) for w in weights]
    prediction = mlp([w + zero for w, zero in zip(weights, at)], key)
    error = rule.attentional_bias.output_error(prediction.unsqueeze(2), value.unsqueeze(2)).squeeze(2)
    grads = list(torch.autograd.grad(prediction, at, grad_outputs=error, create_graph=True))
    if rule.detach_inner:
        grads = [g.detach() for g in grads]
    if rule.max_grad_norm is not None:
        norm = torch.sqrt(sum(g.pow(2).sum((-2, -1)) for g in grads).clamp_min(1e-24))
        scale = (rule.max_grad_norm / norm).clamp(max=1.0)[..., None, None]
        grads = [g * scale for g in grads]
    return grads


def memory_reference(
    q: Tensor, k: Tensor, v: Tensor, gates: Gates, weights, momentum, rule: MemoryRule
) -> tuple[Tensor, list[Tensor], list[Tensor] | None]:
    """The inner loop with per-token updates, every gradient at its chunk's start weights (mini-batch GD).

    Per chunk: each token's (window of) gradient(s) at read(A_chunk start); then token by token
        G_t = (1/c) Σ_{i=t−c+1..t} γ_i ∇ℓ_i,  S_t = η_t S_{t−1} − θ_t G_t,  A_t = ρ_t A_{t−1} + S_t
    (Muon: S_t = η_t S_{t−1} + G_t, A_t = ρ_t A_{t−1} − θ_t NS(S_t)), and y_t = M_{read(A_t)}(q_t).
    Returns (y, final A per layer, final S per layer or None). Gates without a momentum / retain / window
    entry mean no momentum, ρ = 1, γ = 1.
    """
    read = rule.retention.read
    A = list(weights)
    S = list(momentum) if momentum is not None else None
    length, window = q.shape[2], rule.window
    ones = torch.ones_like(gates.lr)
    retain = gates.retain if gates.retain is not None else ones
    window_weights = gates.window if gates.window is not None else ones
    outputs = []
    for start in range(0, length, rule.chunk_size):
        tokens = range(start, min(length, start + rule.chunk_size))
        start_weights = [read(a) for a in A]
        span = range(max(0, start - window + 1), tokens[-1] + 1)  # the chunk and the window's earlier tokens
        grads = {j: token_gradient(start_weights, k[:, :, j], v[:, :, j], rule) for j in span}
        for t in tokens:
            for layer in range(len(A)):
                G = sum(window_weights[:, :, j, None, None] * grads[j][layer] for j in range(max(0, t - window + 1), t + 1)) / window
                scalar = lambda gate: gate[:, :, t, None, None]  # noqa: E731
                if rule.muon:
                    surprise = G if S is None else scalar(gates.momentum) * S[layer] + G
                    if S is not None:
                        S[layer] = surprise
                    update = -scalar(gates.lr) * newton_schulz(surprise, rule.newton_schulz_steps).to(G.dtype)
                else:
                    update = -scalar(gates.lr) * G
                    if S is not None:
                        update = S[layer] = scalar(gates.momentum) * S[layer] + update
                A[layer] = scalar(retain) * A[layer] + update
            outputs.append(mlp([read(a) for a in A], q[:, :, t]))
    return torch.stack(outputs, dim=2), A, S


def self_modifying_reference(layer, x: Tensor) -> tuple[Tensor, dict[str, list[Tensor]]]:
    """SelfModifyingMemory from its initial state, written per memory and token (eq. 79–88).

    Per chunk, the chunk-start memories M_□(u) = u + MLP_□(u) make, for every token,
    k = normalize(M_k(x̄_k)), v = M_v(x̄_v), η = max_lr·σ(M_η(x̄_η)·w_η + b_η), α = σ(M_α(x̄_α)·w_α + b_α)
    (x̄_□ = per-head normalize(x P_□)) and the targets v̂_□ = normalize(M_□(v)) (v for M_mem); each memory
    takes W ← α W − η ∇½‖M_W(k) − v̂_□‖² token by token, gradients at the chunk start, and the output is
    out_proj(q + MLP_mem(q)) with the memory after the token's own write. Returns (y, final weights per memory).
    """
    from somna.kernels.self_modifying import GENERATED, MEMORIES

    batch, length, _ = x.shape
    weights = {name: [w.unsqueeze(0).expand(batch, -1, -1, -1) for w in layer.initial_weights[name]] for name in MEMORIES}
    rule = layer.rule
    outputs = []
    for start in range(0, length, rule.chunk_size):
        chunk = x[:, start : start + rule.chunk_size]
        frozen = {name: list(ws) for name, ws in weights.items()}

        def memory(name: str, u: Tensor) -> Tensor:  # u (B, H, d): one token
            return u + mlp(frozen[name], u)

        for t in range(chunk.shape[1]):
            features = {name: layer.heads(layer.input_proj[name](chunk[:, t : t + 1]))[:, :, 0] for name in GENERATED}
            k = F.normalize(memory("key", features["key"]), dim=-1)
            v = memory("value", features["value"])
            lr = layer.max_lr * torch.sigmoid((memory("lr", features["lr"]) * layer.lr_readout).sum(-1) + layer.lr_bias)
            retain = torch.sigmoid((memory("decay", features["decay"]) * layer.decay_readout).sum(-1) + layer.decay_bias)
            for name in MEMORIES:
                target = v if name == "memory" else F.normalize(memory(name, v), dim=-1)
                grads = token_gradient(frozen[name], k, target - k, rule)
                weights[name] = [retain[..., None, None] * w - lr[..., None, None] * g for w, g in zip(weights[name], grads)]
            q = layer.heads(layer.q_proj(chunk[:, t : t + 1]))[:, :, 0]
            outputs.append(layer.out_proj((q + mlp(weights["memory"], q)).flatten(1)))
    return torch.stack(outputs, dim=1), weights


def cms_reference(layer, x: Tensor) -> tuple[Tensor, list[list[Tensor]]]:
    """ContinuumMemory from its initial state, token by token (eq. 70–74).

    Block ℓ reads y = h + M_θ(normalize(h W_q)) with its current θ, adds η_t clip(∇½‖M_θ(normalize(h W_k)) − h W_v‖²)
    (autograd) to its pending step, and applies θ ← θ − pending when its period ends (nested: restarts
    from the initial θ instead when the next block's period ends). Returns (y, final θ per block).
    """
    periods, batch = layer.periods, x.shape[0]
    initial = [[w.unsqueeze(0).expand(batch, -1, -1) for w in pair] for pair in zip(layer.initial_in, layer.initial_out)]
    weights = [list(ws) for ws in initial]
    pending = [[torch.zeros_like(w) for w in ws] for ws in weights]
    rule = MemoryRule(max_grad_norm=layer.max_grad_norm, detach_inner=layer.detach_inner)

    def block_mlp(ws: list[Tensor], u: Tensor) -> Tensor:  # a single "head"
        return mlp([w.unsqueeze(1) for w in ws], u.unsqueeze(1)).squeeze(1)

    outputs = []
    for t in range(x.shape[1]):
        h = x[:, t]
        block_outputs = []
        for index, period in enumerate(periods):
            inputs = x[:, t] if layer.variant == "headwise" else h
            query = F.normalize(layer.queries[index](inputs), dim=-1)
            h = inputs + block_mlp(weights[index], query)
            block_outputs.append(h)
            if layer.local_objective:
                key = F.normalize(layer.keys[index](inputs), dim=-1).unsqueeze(1)
                value = layer.values[index](inputs).unsqueeze(1)
                grads = token_gradient([w.unsqueeze(1) for w in weights[index]], key, value, rule)
                eta = layer.lr * torch.sigmoid(layer.lr_gates[index](inputs))[:, :, None]
                pending[index] = [p + eta * g.squeeze(1) for p, g in zip(pending[index], grads)]
        for index, period in enumerate(periods):
            if (t + 1) % period:
                continue
            slower = periods[index + 1] if layer.variant == "nested" and index + 1 < len(periods) else None
            if slower is not None and (t + 1) % slower == 0:
                weights[index] = list(initial[index])
            else:
                weights[index] = [w - p for w, p in zip(weights[index], pending[index])]
            pending[index] = [torch.zeros_like(p) for p in pending[index]]
        if layer.variant == "headwise":
            h = x[:, t] + sum(w * (out - x[:, t]) for w, out in zip(layer.mix_weights, block_outputs))
        outputs.append(h)
    return torch.stack(outputs, dim=1), weights


def hope_reference(block, x: Tensor) -> Tensor:
    """HopeBlock from its initial state (eq. 94–97): causal depthwise conv, then the memory, then the CMS."""
    width = block.conv_weight.shape[-1]
    padded = F.pad(x, (0, 0, width - 1, 0))
    conv = torch.stack([(padded[:, t : t + width] * block.conv_weight[:, 0].T).sum(1) for t in range(x.shape[1])], dim=1)
    read, _ = self_modifying_reference(block.memory, conv)
    y, _ = cms_reference(block.cms, x + read)
    return y


def neural_memory_reference(layer, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor] | None]:
    """A NeuralMemory-family layer (Titans, Miras, ATLAS) from its initial state: its projections and gates,
    then `memory_reference`. Returns (y, final A, final S)."""
    batch = x.shape[0]
    q = F.normalize(layer.split_heads(layer.q_proj(x)), dim=-1)
    k = F.normalize(layer.split_heads(layer.k_proj(x)), dim=-1)
    v = layer.split_heads(layer.v_proj(x))
    if layer.feature_map is not None:
        q, k = layer.feature_map(q), layer.feature_map(k)
    weights = [w.unsqueeze(0).expand(batch, -1, -1, -1) for w in layer.initial_weights]
    momentum = [torch.zeros_like(w) for w in weights] if layer.momentum_proj is not None else None
    y, A, S = memory_reference(q, k, v, layer.gates(x), weights, momentum, layer.rule)
    return layer.out_proj(y.transpose(1, 2).flatten(2)), A, S
