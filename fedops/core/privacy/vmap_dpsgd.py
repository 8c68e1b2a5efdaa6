"""Local DP-SGD for many sites of any model: per-sample gradients through torch.func.

The models :mod:`fedops.core.privacy.stacked_dpsgd` cannot write out (convolutions,
embeddings, ...) get each example's gradient from ``vmap(grad(...))`` over the
examples of a batch, vmapped again over the sites of a chunk. The step is the one
that module documents (Opacus's clip factor, N(0, (σC)²) noise per coordinate from
the site's own generator, the expected batch size as divisor, SGD with momentum);
parameters with ``requires_grad=False`` and buffers are left as they came (a model
with floating-point buffers is refused local DP before it gets here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedops.core.params import Params
from fedops.core.privacy.dp_batches import PrivateJob, chunk_run
from fedops.core.privacy.stacked_dpsgd import NORM_EPS
from fedops.core.schedule import VectorConfig

#: per-sample gradients of one chunk's step at most (sites x batch x parameters, bytes)
GRAD_BUDGET_BYTES = 256 << 20


def train_vmap(
    model: nn.Module,
    start: Mapping[str, np.ndarray],
    x: torch.Tensor,
    y: torch.Tensor,
    jobs: Sequence[PrivateJob],
    cfg: VectorConfig,
) -> list[Params]:
    """Every site's DP-SGD round from ``start`` (see :func:`stacked_dpsgd.train_private_many`)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    fixed = {k: torch.as_tensor(np.asarray(v)).to(x.device) for k, v in start.items()}
    base = {n: fixed[n] for n in names}
    size = sum(t.numel() for t in base.values()) * x.element_size()
    batch = max(1, max((round(j.sample_rate * j.size) for j in jobs), default=1))
    width = max(1, min(cfg.max_chunk, GRAD_BUDGET_BYTES // max(1, 2 * batch * size)))
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].steps)  # active sites: a prefix
    results: list[Params | None] = [None] * len(jobs)
    for lo in range(0, len(order), width):
        members = order[lo : lo + width]
        trained = _train_chunk(model, fixed, base, x, y, [jobs[i] for i in members], cfg)
        for slot, i in enumerate(members):
            out = {k: v.detach().cpu().numpy().copy() for k, v in fixed.items()}
            out |= {n: trained[n][slot].detach().cpu().numpy() for n in names}
            results[i] = out
    return [r for r in results if r is not None]


def _train_chunk(
    model: nn.Module,
    fixed: dict[str, torch.Tensor],
    base: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    jobs: Sequence[PrivateJob],
    cfg: VectorConfig,
) -> dict[str, torch.Tensor]:
    run = chunk_run(jobs, base, x, cfg.momentum)
    plan, noise, where, rows, mask = run.plan, run.noise, run.where, run.rows, run.mask
    params, velocity, clip, divisor = run.params, run.velocity, run.clip, run.divisor
    width = run.width
    others = {k: v for k, v in fixed.items() if k not in base}

    def example_loss(
        p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor
    ) -> torch.Tensor:
        logits = functional_call(model, {**others, **p}, (xb.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yb.unsqueeze(0))

    # per site (params batched), per example (params shared within the site)
    per_sample = vmap(
        vmap(grad(example_loss), in_dims=(None, 0, 0), randomness="different"),
        in_dims=(0, 0, 0),
        randomness="different",
    )
    model.train()
    for t, n in enumerate(plan.active):
        lo, hi = plan.offsets[t], plan.offsets[t] + n
        picked = rows[lo:hi].reshape(-1)
        inputs = x.index_select(0, picked).view(n, width, *x.shape[1:])
        targets = y.index_select(0, picked).view(n, width)
        active = {k: v[:n] for k, v in params.items()}
        grads = per_sample(active, inputs, targets)
        m = mask[lo:hi]
        norm2 = sum((g.flatten(2) ** 2).sum(dim=2) for g in grads.values())
        assert isinstance(norm2, torch.Tensor)
        factor = (clip[:n, None] / (norm2.sqrt() + NORM_EPS)).clamp(max=1.0) * m
        drawn = noise.at(t, n)
        with torch.no_grad():
            for name, g in grads.items():
                summed = torch.einsum("nw,nw...->n...", factor, g)
                step = summed + drawn[:, where[name]].view_as(summed)
                step = step / divisor[:n].view(n, *([1] * (step.dim() - 1)))
                if cfg.momentum:
                    step = velocity[name][:n].mul_(cfg.momentum).add_(step)
                params[name][:n] -= cfg.lr * step
    return params
