"""Local DP-SGD for many sites at once: per-example clipping over stacked weights.

Every site runs the DP-SGD step of :func:`fedops.core.privacy.local.train_private`
(Opacus: per-example gradients of each example's own loss, each clipped to L2 norm C
with factor ``min(1, C / (norm + 1e-6))``, summed, N(0, (σC)²) noise added, divided
by the expected batch size, then SGD with optional momentum; FedProx's term is not
used, as there) on its own Poisson batches (:mod:`fedops.core.privacy.dp_batches`).

For a chain of linear layers and pointwise activations (:func:`fedops.core.stacked.
chain_of`) no per-example gradient is ever materialized: an example's gradient for a
linear layer is the outer product of the gradient at the layer's output ``g`` and its
input ``h``, so its squared norm is ``|g|² |h|²`` (plus ``|g|²`` for the bias), and
the clipped sum is one batched product ``(c·g)ᵀ h``. Any other model goes through
:mod:`fedops.core.privacy.vmap_dpsgd` (torch.func per-sample gradients).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from fedops.core.params import Params
from fedops.core.privacy.dp_batches import PrivateJob, chunk_run
from fedops.core.schedule import VectorConfig
from fedops.core.stacked import Layer, chain_of, forward_layers, sgd_step

#: Opacus's guard against a zero norm in the clip factor C / (norm + 1e-6)
NORM_EPS = 1e-6


def train_private_many(
    model: nn.Module,
    start: Mapping[str, np.ndarray],
    x: torch.Tensor,
    y: torch.Tensor,
    jobs: Sequence[PrivateJob],
    cfg: VectorConfig,
) -> list[Params]:
    """Every site's DP-SGD round from ``start``; its new parameters, in ``jobs``' order.

    ``cfg``'s ``lr``, ``momentum`` and ``max_chunk`` apply (``proximal_mu`` does not:
    local DP trains without FedProx's term). Linear/MLP chains take the stacked
    path, every other model torch.func's.
    """
    cfg = replace(cfg, proximal_mu=0.0)
    chain = chain_of(model, x)
    if isinstance(chain, list):
        return _stacked(chain, start, x, y, jobs, cfg)
    from fedops.core.privacy.vmap_dpsgd import train_vmap  # torch.func only where needed

    return train_vmap(model, start, x, y, jobs, cfg)


def _stacked(
    layers: Sequence[Layer],
    start: Mapping[str, np.ndarray],
    x: torch.Tensor,
    y: torch.Tensor,
    jobs: Sequence[PrivateJob],
    cfg: VectorConfig,
) -> list[Params]:
    x = x.flatten(1) if x.dim() > 2 else x  # as the leading nn.Flatten does (chain_of checks)
    names = [n for layer in layers if layer.kind == "linear" for n in (layer.weight, layer.bias)]
    base = {n: torch.as_tensor(np.asarray(start[n])).to(x.device, x.dtype) for n in names if n}
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].steps)  # active sites: a prefix
    width = max(1, cfg.max_chunk)
    results: list[Params | None] = [None] * len(jobs)
    for lo in range(0, len(order), width):
        members = order[lo : lo + width]
        trained = _train_chunk(layers, base, x, y, [jobs[i] for i in members], cfg)
        for slot, i in enumerate(members):
            results[i] = {n: v[slot] for n, v in trained.items()}
    return [r for r in results if r is not None]


def _train_chunk(
    layers: Sequence[Layer],
    base: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    jobs: Sequence[PrivateJob],
    cfg: VectorConfig,
) -> dict[str, np.ndarray]:
    run = chunk_run(jobs, base, x, cfg.momentum)
    plan, noise, where, rows, mask = run.plan, run.noise, run.where, run.rows, run.mask
    stack, velocity, clip, divisor = run.params, run.velocity, run.clip, run.divisor
    width = run.width
    count = len(jobs)
    minus_one = torch.full((count, width, 1), -1.0, dtype=x.dtype, device=x.device)
    for t, n in enumerate(plan.active):
        lo, hi = plan.offsets[t], plan.offsets[t] + n
        picked = rows[lo:hi].reshape(-1)
        inputs = x.index_select(0, picked).view(n, width, -1)
        targets = y.index_select(0, picked).view(n, width, 1)
        outputs = forward_layers(layers, stack, inputs, n)
        # d(example's own loss)/d logits, zero for the padding
        grad = torch.softmax(outputs[-1], dim=2).scatter_add_(2, targets, minus_one[:n])
        grad = grad.mul_(mask[lo:hi].unsqueeze(2))
        parts, norm2 = _per_example(layers, stack, outputs, grad, n)
        factor = (clip[:n, None] / (norm2.sqrt() + NORM_EPS)).clamp(max=1.0).unsqueeze(2)
        drawn, scale = noise.at(t, n), divisor[:n].view(n, 1, 1)
        for layer, g, below in parts:  # the clipped sums, noised, over the expected batch
            g = g * factor
            d_weight = torch.bmm(g.transpose(1, 2), below)
            d_weight += drawn[:, where[layer.weight]].view_as(d_weight)
            sgd_step(stack, velocity, base, layer.weight, d_weight.div_(scale), n, cfg)
            if layer.bias is not None:
                d_bias = g.sum(dim=1) + drawn[:, where[layer.bias]]
                sgd_step(stack, velocity, base, layer.bias, d_bias.div_(scale[:, 0]), n, cfg)
    return {n: t.cpu().numpy() for n, t in stack.items()}


def _per_example(
    layers: Sequence[Layer],
    stack: dict[str, torch.Tensor],
    outputs: Sequence[torch.Tensor],
    grad: torch.Tensor,
    n: int,
) -> tuple[list[tuple[Layer, torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Back-propagate each example's ``grad`` through the chain (weights as they are):
    every linear layer's (layer, output gradient, input) and each example's squared
    gradient norm over all parameters, ``[n, width]``."""
    parts: list[tuple[Layer, torch.Tensor, torch.Tensor]] = []
    norm2 = torch.zeros(grad.shape[:2], dtype=grad.dtype, device=grad.device)
    for k in range(len(layers) - 1, -1, -1):
        layer, below, above = layers[k], outputs[k], outputs[k + 1]
        if layer.kind == "relu":
            grad = grad.masked_fill(above <= 0, 0.0)
        elif layer.kind == "leaky_relu":
            grad = torch.where(below > 0, grad, grad * layer.slope)
        elif layer.kind == "tanh":
            grad = grad * (1.0 - above * above)
        elif layer.kind == "sigmoid":
            grad = grad * (above * (1.0 - above))
        elif layer.kind == "linear":
            g2 = (grad * grad).sum(dim=2)
            h2 = (below * below).sum(dim=2)
            norm2 += g2 * (h2 + 1.0) if layer.bias is not None else g2 * h2
            parts.append((layer, grad, below))
            if k > 0:
                grad = torch.bmm(grad, stack[layer.weight][:n])
    return parts, norm2
