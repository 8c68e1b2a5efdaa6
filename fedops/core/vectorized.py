"""Train many clients of one architecture at once: torch.func + vmap over stacked weights.

Every client runs exactly the loop of :func:`fedops.core.training.train` (SGD,
optional momentum, FedProx term, shuffling seeded per client), only side by
side: at step ``t`` all clients of a chunk take their own ``t``-th minibatch
through one vmapped forward/backward. Clients differ in data size, so a
chunk holds clients with similar step counts (few idle slots) and short
batches are padded with a mask that keeps the padded rows out of the loss;
a client whose steps are done is frozen, not updated. The result equals the
per-client loop up to floating-point summation order.

:func:`train_many` hands chains of linear layers and pointwise activations to
:mod:`fedops.core.stacked` instead (the same computation with the backward
written out, ~10x cheaper per step), CNN-style chains (convolutions, pooling,
normalization with per-client BatchNorm statistics, dropout, embeddings) to
:mod:`fedops.core.batched_cnn` (one autograd graph over stacked weights); this
module's vmap path takes the rest.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from fedops.core.batched_cnn import cnn_chain, structure, train_cnn
from fedops.core.params import Params
from fedops.core.schedule import ClientJob, VectorConfig
from fedops.core.stacked import chain_of, train_stacked
from fedops.core.training import TrainConfig, get_params, set_params, train


def supports(model: nn.Module) -> str | None:
    """Why this model cannot be trained vectorized, or None if it can."""
    if any(True for _ in model.buffers()):
        chain = structure(model)  # BatchNorm's statistics: per client in batched_cnn
        if isinstance(chain, str):
            return f"the model has buffers outside a chain of batched_cnn layers ({chain})"
    if not any(p.requires_grad for p in model.parameters()):
        return "the model has no trainable parameters"
    return None


def _batch_plan(job: ClientJob, batch_size: int, total_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices [steps, batch] and mask for one client (:meth:`ClientJob.batches`), with
    steps past the client's own padded by its first row, masked out (a client without rows
    has no first row: row 0, masked out all the same)."""
    rows, lengths = job.batches(batch_size)
    idx = np.full((total_steps, batch_size), job.start if job.size else 0, dtype=np.int64)
    idx[: len(rows)] = rows
    mask = np.zeros((total_steps, batch_size), dtype=np.float32)
    mask[: len(rows)] = np.arange(batch_size)[None, :] < lengths[:, None]
    return idx, mask


def chunks(jobs: Sequence[ClientJob], cfg: VectorConfig, row_width: int) -> Iterator[list[int]]:
    """Client positions grouped so that steps within a group differ by at most ``step_ratio``.

    Padding every client to the longest one wastes most slots under power-law
    sizes; grouping by step count keeps idle slots few while each group is
    still wide enough to amortise the per-step overhead. Groups also respect
    the memory bound ``max_chunk_rows``.
    """
    steps = [job.steps(cfg.batch_size) for job in jobs]
    order = sorted(range(len(jobs)), key=lambda i: steps[i])
    width = max(1, min(cfg.max_chunk, cfg.max_chunk_rows // max(1, cfg.batch_size * row_width)))
    group: list[int] = []
    for i in order:
        if group and (len(group) >= width or steps[i] > cfg.step_ratio * steps[group[0]]):
            yield group
            group = []
        group.append(i)
    if group:
        yield group


def train_many(
    model: nn.Module,
    start: Mapping[str, np.ndarray],
    x: torch.Tensor,
    y: torch.Tensor,
    jobs: Sequence[ClientJob],
    cfg: VectorConfig,
) -> list[tuple[Params, float]]:
    """Train every job from ``start``; return (params, mean training loss) per job, in order.

    Linear/MLP chains go to the stacked trainer and CNN-style chains to batched_cnn
    (``cfg.stacked``, default on: the fast paths), any other model through torch.func, a
    model with buffers that batched_cnn cannot take on these inputs client by client; all
    compute the per-client loop's parameters.
    """
    reason = supports(model)
    if reason is not None:
        raise ValueError(f"cannot train this model vectorized: {reason}")
    chain = chain_of(model, x) if cfg.stacked else None
    if isinstance(chain, list):
        return train_stacked(chain, start, x, y, jobs, cfg)
    cnn = cnn_chain(model, x) if cfg.stacked else None
    if cnn is not None and not isinstance(cnn, str):
        return train_cnn(model, cnn, start, x, y, jobs, cfg)
    if any(True for _ in model.buffers()):  # vmap cannot update buffers: the plain loop can
        return [_train_one(model, start, x, y, job, cfg) for job in jobs]
    names = [n for n, p in model.named_parameters()]
    base = {n: torch.as_tensor(np.asarray(start[n])).to(x.device) for n in names}
    results: list[tuple[Params, float] | None] = [None] * len(jobs)
    row_width = int(np.prod(x.shape[1:])) if x.dim() > 1 else 1
    for group in chunks(jobs, cfg, row_width):
        if len(group) < cfg.min_width:
            # A vmapped step costs ~1 ms of overhead; a lone client of the power-law tail
            # (thousands of steps) is faster in the plain loop, which computes the same.
            for i in group:
                results[i] = _train_one(model, start, x, y, jobs[i], cfg)
            continue
        trained, losses = _train_chunk(model, base, x, y, [jobs[i] for i in group], cfg)
        for slot, i in enumerate(group):
            results[i] = ({n: trained[n][slot].cpu().numpy() for n in names}, losses[slot])
    return [r for r in results if r is not None]


def _train_one(
    model: nn.Module,
    start: Mapping[str, np.ndarray],
    x: torch.Tensor,
    y: torch.Tensor,
    job: ClientJob,
    cfg: VectorConfig,
) -> tuple[Params, float]:
    set_params(model, start)
    metrics = train(
        model,
        (x[job.start : job.stop], y[job.start : job.stop]),
        TrainConfig(
            epochs=job.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            momentum=cfg.momentum,
            proximal_mu=cfg.proximal_mu,
            seed=job.seed,
        ),
    )
    return get_params(model), metrics["train_loss"]


def _train_chunk(
    model: nn.Module,
    base: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    jobs: Sequence[ClientJob],
    cfg: VectorConfig,
) -> tuple[dict[str, torch.Tensor], list[float]]:
    count = len(jobs)
    total = max(job.steps(cfg.batch_size) for job in jobs)
    plans = [_batch_plan(job, cfg.batch_size, total) for job in jobs]
    idx = torch.from_numpy(np.stack([p[0] for p in plans])).to(x.device)  # [clients, steps, B]
    mask = torch.from_numpy(np.stack([p[1] for p in plans])).to(x.device)
    params = {n: t.unsqueeze(0).repeat(count, *([1] * t.dim())).clone() for n, t in base.items()}
    velocity = {n: torch.zeros_like(t) for n, t in params.items()} if cfg.momentum else {}
    mu = cfg.proximal_mu

    def loss_fn(
        p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor, mb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = functional_call(model, p, (xb,))
        per_row = nn.functional.cross_entropy(logits, yb, reduction="none")
        data_loss = (per_row * mb).sum() / mb.sum().clamp(min=1.0)
        loss = data_loss
        if mu > 0:
            prox = sum(((p[n] - base[n]) ** 2).sum() for n in p)
            loss = loss + 0.5 * mu * prox
        return loss, data_loss

    step_fn = vmap(grad_and_value(loss_fn, has_aux=True))
    loss_sum = torch.zeros(count, dtype=torch.float64, device=x.device)
    model.train()
    for t in range(total):
        rows, mb = idx[:, t], mask[:, t]
        grads, (_, data_loss) = step_fn(params, x[rows], y[rows], mb)
        seen = mb.sum(dim=1)
        active = (seen > 0).to(x.dtype)
        loss_sum += (data_loss.detach() * seen).double()
        with torch.no_grad():
            for n in params:
                shape = (count,) + (1,) * (params[n].dim() - 1)
                step = grads[n]
                if cfg.momentum:
                    velocity[n] = torch.where(
                        active.view(shape) > 0, cfg.momentum * velocity[n] + step, velocity[n]
                    )
                    step = velocity[n]
                params[n] = params[n] - cfg.lr * active.view(shape) * step
    sizes = torch.tensor(
        [job.size * job.epochs for job in jobs], dtype=torch.float64, device=x.device
    )
    mean_loss = (loss_sum / sizes.clamp(min=1)).tolist()
    return {n: t.detach() for n, t in params.items()}, mean_loss
