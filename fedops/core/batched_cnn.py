"""Train many clients of a CNN-style chain at once: stacked weights, one autograd graph.

Convolutions, pooling, normalization, dropout and embeddings take ~1 ms per
step through ``torch.func.vmap``; a conv net of a hundred clients is then
slower than the plain per-client loop. Here every client's weights are one
slice of a stacked tensor and one step runs the whole chunk's minibatches
through :mod:`fedops.core.batched_layers` (a grouped convolution over the
clients stacked on channels, batched matrix products, per-client
normalization) and one ``backward``. The loss is the sum over clients of each
client's mean minibatch loss, so client c's weights get exactly the gradient of
client c's own loss: no client's rows reach another's weights.

Scheduling and the update are the stacked trainer's (:mod:`fedops.core.stacked`):
clients sorted by step count, longest first, so the active clients of step
``t`` are a prefix of the stack; each client's own seeded minibatches
(:meth:`ClientJob.batches`); a short last minibatch padded with the client's
first row at weight 0 (and kept out of BatchNorm's statistics by a mask);
SGD with optional momentum and FedProx's term, per client. Each client keeps
its own BatchNorm running statistics. Dropout masks are drawn per client from
a hash of its seed and step (:func:`fedops.core.batched_layers.client_keys`),
not from torch's generator: deterministic and independent across clients, but
not the masks the client's own loop would draw, so equality with the loop
holds with dropout off (``p=0`` or evaluation), and in distribution with it on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fedops.core.batched_layers import (
    Op,
    Pass,
    client_keys,
    forward,
    inputs_of,
    parse,
    step_keys,
)
from fedops.core.params import Params
from fedops.core.schedule import ClientJob, VectorConfig

# the schedule and the SGD update are the stacked trainer's: one semantics for both
from fedops.core.stacked import batch_plan, sgd_step

#: activations, their gradients and the weights of one chunk. Small enough to stay near
#: the caches: the benchmark CNN (vs_floor --model cnn, 100 clients) took 1.3-1.5 CPU-s per
#: round at 6-50 clients a chunk (this budget: ~15) and 2.2 s at 100 (one thread, 2 cores)
ACTIVATION_BUDGET_BYTES = 128 << 20
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True, slots=True)
class Chain:
    """A model this module trains: its layers and the activation elements one row makes."""

    ops: list[Op]
    per_row: int


def structure(model: nn.Module) -> list[Op] | str:
    """The layers, or why the model is no chain this module runs (without looking at data)."""
    ops = parse(model)
    if isinstance(ops, str):
        return ops
    if not ops or not any(p.requires_grad for p in model.parameters()):
        return "no trainable layers"
    if len({id(op.module) for op in ops}) != len(ops):
        return "a layer used twice in the chain"
    kinds = {op.prefix: op.kind for op in ops}
    for name, _ in model.named_buffers():
        prefix, _, leaf = name.rpartition(".")
        if kinds.get(prefix + "." if prefix else "") != "batchnorm" or leaf not in BN_BUFFERS:
            return f"buffer {name!r} is not a BatchNorm running statistic"
    dtypes = {p.dtype for p in model.parameters()}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        return "parameters of more than one dtype"
    return ops


def cnn_chain(model: nn.Module, x: torch.Tensor) -> Chain | str:
    """The model as a :class:`Chain` for inputs like ``x``, or why this module cannot train it.

    Beyond the layer types, one batched forward pass of a few rows (evaluation mode) must
    equal the model's own: what the layout rules do not cover (an unexpected shape, a
    Linear on image axes) shows up there, and such a model goes to the general trainer.
    """
    ops = structure(model)
    if isinstance(ops, str):
        return ops
    dtype = next(model.parameters()).dtype
    if x.is_floating_point() and x.dtype != dtype:
        return "inputs are not of the model's dtype"
    if ops[0].kind != "embedding" and not x.is_floating_point():
        return "integer inputs to a chain that does not start with nn.Embedding"
    rows = x[: min(4, len(x))]
    if not len(rows):
        return Chain(ops, 0)  # nothing to train on
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            got = _batched_logits(model, ops, rows)
            want, per_row = _own_logits(model, ops, rows)
    except (ValueError, RuntimeError, IndexError, TypeError) as err:
        return f"cannot run it batched ({err})"
    finally:
        model.train(was)
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        return "the batched forward pass differs from the model's"
    return Chain(ops, per_row)


def _batched_logits(model: nn.Module, ops: list[Op], rows: torch.Tensor) -> torch.Tensor:
    """The batched chain's logits for ``rows`` as one client's minibatch, in evaluation mode."""
    weights = {n: p.detach().unsqueeze(0) for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone().unsqueeze(0) for n, b in model.named_buffers()}
    h, spatial = inputs_of(rows, torch.arange(len(rows), device=rows.device).view(1, -1))
    return forward(ops, weights, buffers, h, spatial, Pass(n=1, training=False))[0]


def _own_logits(model: nn.Module, ops: list[Op], rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The model's logits for ``rows``, and the activation elements one row makes in it."""
    sizes: list[int] = [rows[0].numel() * len(rows)]

    def count(module: nn.Module, args: object, out: torch.Tensor) -> None:
        sizes.append(out.numel())

    hooks = [op.module.register_forward_hook(count) for op in ops]
    try:
        logits = model(rows)
    finally:
        for hook in hooks:
            hook.remove()
    return logits, sum(sizes) // len(rows)


def train_cnn(
    model: nn.Module,
    chain: Chain,
    start: Mapping[str, np.ndarray],
    x: torch.Tensor,
    y: torch.Tensor,
    jobs: Sequence[ClientJob],
    cfg: VectorConfig,
) -> list[tuple[Params, float]]:
    """Train every job from ``start``; return (params and buffers, mean training loss) per
    job, in order: what :func:`fedops.core.training.train` computes for each client."""
    base = {n: torch.as_tensor(np.asarray(start[n])).to(x.device) for n in model.state_dict()}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    weights = sum(t.numel() for t in base.values()) * 3  # stacked, momentum, gradient
    per_client = (chain.per_row * cfg.batch_size * 3 + weights) * x.element_size()
    width = max(1, min(cfg.max_chunk, ACTIVATION_BUDGET_BYTES // max(1, per_client)))
    steps = np.array([job.steps(cfg.batch_size) for job in jobs], dtype=np.int64)
    order = np.argsort(-steps, kind="stable")  # longest first: the active clients are a prefix
    results: list[tuple[Params, float] | None] = [None] * len(jobs)
    model.train()
    for lo in range(0, len(order), width):
        members = order[lo : lo + width]
        chunk = _Chunk(chain.ops, base, trainable, [jobs[i] for i in members], cfg, x.device)
        losses = chunk.train(x, y, steps[members])
        for slot, i in enumerate(members):
            state = {n: v[slot].cpu().numpy() for n, v in chunk.stack.items()}
            results[i] = (state, float(losses[slot]))
    return [r for r in results if r is not None]


class _Chunk:
    """Clients trained together: their stacked weights, buffers and momentum."""

    def __init__(
        self,
        ops: list[Op],
        base: dict[str, torch.Tensor],
        trainable: list[str],
        jobs: Sequence[ClientJob],
        cfg: VectorConfig,
        device: torch.device,
    ) -> None:
        count = len(jobs)
        self.ops, self.base, self.trainable, self.jobs, self.cfg = ops, base, trainable, jobs, cfg
        self.stack = {n: t.expand(count, *t.shape).clone() for n, t in base.items()}
        self.velocity = (
            {n: torch.zeros_like(self.stack[n]) for n in trainable} if cfg.momentum else {}
        )
        self.keys = client_keys([job.seed for job in jobs], device)
        owners = {op.prefix + leaf for op in ops if op.kind == "batchnorm" for leaf in BN_BUFFERS}
        self.buffers = [n for n in base if n in owners]

    def train(self, x: torch.Tensor, y: torch.Tensor, steps: np.ndarray) -> np.ndarray:
        """Every step of every client; each client's mean training loss."""
        batch = self.cfg.batch_size
        plan = batch_plan(self.jobs, steps, batch)
        rows = plan.rows.to(x.device)
        # 1/len(minibatch) in the model's dtype (the plan's are float32: 1/3 off by 3e-8)
        dtype = self.base[self.trainable[0]].dtype
        lengths = torch.from_numpy(plan.lengths).to(x.device, dtype).unsqueeze(1)
        filled = torch.arange(batch, device=x.device).unsqueeze(0) < lengths
        weights = filled.to(dtype) / lengths.clamp(min=1)
        batch_loss = torch.zeros(len(plan.owner), dtype=torch.float64, device=x.device)
        for t, n in enumerate(plan.active):
            lo, hi = plan.offsets[t], plan.offsets[t] + n
            w = weights[lo:hi]
            ragged = int(plan.lengths[lo:hi].min()) < batch
            run = Pass(
                n, True, (w > 0).to(w.dtype) if ragged else None, step_keys(self.keys[:n], t)
            )
            batch_loss[lo:hi] = self._step(x, y, rows[lo:hi], w, run)
        mean_batch = batch_loss.cpu().numpy()
        loss_sum = np.bincount(plan.owner, weights=mean_batch * plan.lengths, minlength=len(steps))
        seen = np.array([job.size * job.epochs for job in self.jobs], dtype=np.float64)
        return loss_sum / np.maximum(seen, 1)

    def _step(
        self, x: torch.Tensor, y: torch.Tensor, picked: torch.Tensor, w: torch.Tensor, run: Pass
    ) -> torch.Tensor:
        """One SGD step of the first ``run.n`` clients; their minibatches' mean losses."""
        n = run.n
        leaves = {name: self.stack[name][:n].detach().requires_grad_() for name in self.trainable}
        current = {name: leaves.get(name, t[:n]) for name, t in self.stack.items()}
        buffers = {name: self.stack[name][:n] for name in self.buffers}
        h, spatial = inputs_of(x, picked)
        logits = forward(self.ops, current, buffers, h, spatial, run)
        targets = y.index_select(0, picked.reshape(-1))
        per_row = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets, reduction="none")
        per_batch = (per_row.view(n, -1) * w).sum(dim=1)  # each client's mean minibatch loss
        grads = torch.autograd.grad(per_batch.sum(), [leaves[name] for name in self.trainable])
        with torch.no_grad():
            for name, grad in zip(self.trainable, grads, strict=True):
                sgd_step(self.stack, self.velocity, self.base, name, grad, n, self.cfg)
        losses: torch.Tensor = per_batch.detach().double()
        return losses
