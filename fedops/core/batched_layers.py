"""The layers of a CNN-style chain, run for many clients at once on stacked weights.

Why a layout per kind of activation, not one: a convolution is cheapest for all
clients together as one grouped convolution (``groups = clients``), whose input
is batch-major with the clients stacked on the channel axis,
``[rows, clients * channels, H, W]`` ("spatial"). That layout also gives every
per-channel layer its per-client meaning for free: pooling and pointwise
activations never mix channels, BatchNorm2d over ``clients * channels`` channels
keeps each client's batch statistics and running statistics apart, GroupNorm
with ``clients * groups`` groups normalizes each client's own groups. After
``nn.Flatten`` rows become client-major, ``[clients, rows, features]`` ("rows"),
the layout of a batched matrix product (``baddbmm``) for ``nn.Linear`` and a
per-client offset into one stacked table for ``nn.Embedding``.

Every weight is one slice per client of a stacked tensor; the trainer
(:mod:`fedops.core.batched_cnn`) differentiates the whole chain with autograd.
Dropout masks come from a counter-based hash of (client key, step, layer,
element) rather than torch's generator, so a client's mask depends on nothing
but its own seed and step: not on which other clients share its chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

POINTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
)
POOLS: tuple[type[nn.Module], ...] = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
KINDS: dict[type[nn.Module], str] = {
    nn.Conv2d: "conv",
    nn.Linear: "linear",
    nn.Flatten: "flatten",
    nn.BatchNorm1d: "batchnorm",
    nn.BatchNorm2d: "batchnorm",
    nn.GroupNorm: "groupnorm",
    nn.LayerNorm: "layernorm",
    nn.Dropout: "dropout",
    nn.Embedding: "embedding",
    **{t: "pointwise" for t in POINTWISE},
    **{t: "pool" for t in POOLS},
}
M32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Op:
    """One layer of the chain: its kind, the module (hyperparameters) and its name prefix."""

    kind: str
    module: nn.Module
    prefix: str


@dataclass(frozen=True, slots=True)
class Pass:
    """What one forward pass of ``n`` clients needs besides the weights."""

    n: int
    training: bool
    mask: torch.Tensor | None = None  # [n, batch] 1.0 for real rows, 0.0 for padding
    keys: torch.Tensor | None = None  # [n] int64 dropout keys of this step


def parse(module: nn.Module, prefix: str = "") -> list[Op] | str:
    """The model as a list of layers, or which layer this module cannot run batched.

    Exact types only: a subclass may override ``forward``, and then these are not its layers.
    """
    kind = KINDS.get(type(module))
    if type(module) is nn.Sequential:
        ops: list[Op] = []
        for name, child in module._modules.items():  # named_children() hides a reused layer
            if child is None:
                continue
            sub = parse(child, f"{prefix}{name}.")
            if isinstance(sub, str):
                return sub
            ops.extend(sub)
        return ops
    if type(module) is nn.Identity:
        return []
    if kind is None:
        return f"{type(module).__name__} layers"
    why = _refusal(module)
    return why if why is not None else [Op(kind, module, prefix)]


def _refusal(m: nn.Module) -> str | None:
    """Why a layer of a supported type still cannot run batched (options it does not map)."""
    if isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) != (1, -1):
        return "nn.Flatten with non-default dimensions"
    if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros" and isinstance(m.padding, str):
        return "nn.Conv2d with string padding and a non-zero padding_mode"
    if getattr(m, "return_indices", False):
        return "pooling with return_indices"
    if isinstance(m, nn.Embedding) and (
        m.padding_idx is not None or m.max_norm is not None or m.sparse or m.scale_grad_by_freq
    ):
        return "nn.Embedding with padding_idx, max_norm, sparse or scale_grad_by_freq"
    if isinstance(m, nn.Dropout) and m.inplace:
        return "in-place nn.Dropout"
    return None


def inputs_of(x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The rows ``[n, batch]`` of ``x`` in the chain's first layout, and whether it is spatial."""
    n, batch = rows.shape
    if x.dim() == 4:  # images: batch-major, client c's channels at [c * ch, (c + 1) * ch)
        picked = x.index_select(0, rows.t().reshape(-1)).view(batch, n * x.shape[1], *x.shape[2:])
        # channels-last: CPU max-pooling of [32, 120, 28, 28] took 1.4 ms in it, 19 ms in
        # NCHW; a two-conv chain's step (forward and backward) 36 ms instead of 50
        return picked.contiguous(memory_format=torch.channels_last), True
    return x.index_select(0, rows.reshape(-1)).view(n, batch, *x.shape[1:]), False


def forward(
    ops: list[Op],
    weights: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    h: torch.Tensor,
    spatial: bool,
    run: Pass,
) -> torch.Tensor:
    """Logits ``[n, batch, classes]``; BatchNorm running statistics updated in ``buffers``."""
    for index in _order(ops):
        h, spatial = _apply(ops[index], index, weights, buffers, h, spatial, run)
    if spatial or h.dim() != 3:
        raise ValueError("the chain does not end in [rows, classes] logits")
    return h


def _order(ops: list[Op]) -> list[int]:
    """The layers' order, with each ReLU that precedes a MaxPool2d moved after it.

    The two commute (ReLU is monotone: the max of the rectified window is the rectified
    max, and the gradient reaches the same element or is zero in both), and the ReLU then
    runs, forward and backward, on a quarter of the elements (13% of a step's time in
    the benchmark CNN).
    """
    order = list(range(len(ops)))
    for i in range(len(ops) - 1):
        a, b = ops[order[i]].module, ops[order[i + 1]].module
        if type(a) is nn.ReLU and type(b) is nn.MaxPool2d:
            order[i], order[i + 1] = order[i + 1], order[i]
    return order


def _apply(
    op: Op,
    index: int,
    weights: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    h: torch.Tensor,
    spatial: bool,
    run: Pass,
) -> tuple[torch.Tensor, bool]:
    w, b = weights.get(op.prefix + "weight"), weights.get(op.prefix + "bias")
    m = op.module
    if op.kind == "pointwise":
        return m(h), spatial
    if op.kind == "pool":
        _need(op, spatial, True)
        return m(h), spatial
    if op.kind == "flatten":
        if spatial:
            return h.reshape(h.shape[0], run.n, -1).transpose(0, 1), False
        return (h.flatten(2) if h.dim() > 3 else h), False
    if op.kind == "dropout":
        return _dropout(h, float(getattr(m, "p", 0.0)), index, spatial, run), spatial
    if op.kind == "batchnorm":
        _need(op, spatial, isinstance(m, nn.BatchNorm2d))
        return _batch_norm(op, w, b, buffers, h, spatial, run), spatial
    if op.kind == "groupnorm" and isinstance(m, nn.GroupNorm):
        return _per_channel(h, spatial, run.n, lambda z: _group_norm(m, w, b, z, run.n)), spatial
    if op.kind == "layernorm" and isinstance(m, nn.LayerNorm):
        return _layer_norm(m, w, b, h, spatial, run.n), spatial
    assert w is not None
    if op.kind == "conv" and isinstance(m, nn.Conv2d):
        _need(op, spatial, True)
        return _conv(m, w, b, h, run.n), True
    _need(op, spatial, False)
    if op.kind == "embedding":
        if h.is_floating_point():
            raise ValueError("nn.Embedding needs integer inputs")
        offsets = (torch.arange(run.n, device=h.device) * w.shape[1]).view(-1, *[1] * (h.dim() - 1))
        return F.embedding(h + offsets, w.reshape(-1, w.shape[-1])), False
    shape = h.shape
    flat = h.reshape(run.n, -1, shape[-1])
    out = (
        torch.bmm(flat, w.transpose(1, 2))
        if b is None
        else torch.baddbmm(b.unsqueeze(1), flat, w.transpose(1, 2))
    )
    return out.view(*shape[:-1], w.shape[1]), False


def _need(op: Op, spatial: bool, want: bool) -> None:
    if spatial != want:
        kind = "[rows, channels, H, W] images" if want else "feature rows (after nn.Flatten)"
        raise ValueError(f"{type(op.module).__name__} at {op.prefix!r} is batched on {kind} only")


def _conv(
    m: nn.Conv2d, w: torch.Tensor, b: torch.Tensor | None, h: torch.Tensor, n: int
) -> torch.Tensor:
    """One grouped convolution: client c's filters see only client c's channels."""
    padding: str | tuple[int, ...] = m.padding
    if m.padding_mode != "zeros":  # reflect/replicate/circular pad each channel alone
        sides: tuple[int, ...] = tuple(m.padding)  # type: ignore[arg-type]  # str: refused
        pad = [p for p in reversed(sides) for _ in range(2)]
        h, padding = F.pad(h, pad, mode=m.padding_mode), (0, 0)
    bias = None if b is None else b.reshape(-1)
    weight = w.reshape(-1, *w.shape[2:])
    return F.conv2d(h, weight, bias, m.stride, padding, m.dilation, m.groups * n)


def _per_channel(
    h: torch.Tensor, spatial: bool, n: int, fn: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``fn`` on a ``[rows, clients * channels, ...]`` view: rows layouts ``[n, rows, F]`` are
    moved there and back (and only those: BatchNorm1d/GroupNorm on ``[N, C, L]`` are not)."""
    if spatial:
        return fn(h)
    if h.dim() != 3:
        raise ValueError("per-channel normalization of rows with more than one feature axis")
    batch = h.shape[1]
    z = h.transpose(0, 1).reshape(batch, -1)
    return fn(z).view(batch, n, -1).transpose(0, 1)


def _group_norm(
    m: nn.GroupNorm, w: torch.Tensor | None, b: torch.Tensor | None, z: torch.Tensor, n: int
) -> torch.Tensor:
    flat_w = None if w is None else w.reshape(-1)
    flat_b = None if b is None else b.reshape(-1)
    return F.group_norm(z, m.num_groups * n, flat_w, flat_b, m.eps)


def _layer_norm(
    m: nn.LayerNorm,
    w: torch.Tensor | None,
    b: torch.Tensor | None,
    h: torch.Tensor,
    spatial: bool,
    n: int,
) -> torch.Tensor:
    """Normalize each row's trailing axes; the per-client affine broadcasts over the rest."""
    view = h.reshape(h.shape[0], n, -1, *h.shape[2:]) if spatial else h
    ns = tuple(m.normalized_shape)
    out = F.layer_norm(view, ns, None, None, m.eps)
    lead = [1, n] if spatial else [n, 1]
    shape = [*lead, *[1] * (view.dim() - 2 - len(ns)), *ns]
    if w is not None:
        out = out * w.view(shape)
    if b is not None:
        out = out + b.view(shape)
    return out.reshape(h.shape)


def _batch_norm(
    op: Op,
    w: torch.Tensor | None,
    b: torch.Tensor | None,
    buffers: Mapping[str, torch.Tensor],
    h: torch.Tensor,
    spatial: bool,
    run: Pass,
) -> torch.Tensor:
    """Each client's batch statistics over its real rows only; its own running statistics."""
    m = op.module
    assert isinstance(m, nn.modules.batchnorm._BatchNorm)
    mean, var = buffers.get(op.prefix + "running_mean"), buffers.get(op.prefix + "running_var")
    tracked = buffers.get(op.prefix + "num_batches_tracked")
    factor = 0.0 if m.momentum is None else float(m.momentum)
    if run.training and tracked is not None:
        tracked.add_(1)
        if m.momentum is None:  # a cumulative average: every active client has seen as many
            factor = 1.0 / float(tracked[0])
    batch_stats = run.training or mean is None
    flat = [None if t is None else t.reshape(-1) for t in (mean, var, w, b)]

    def norm(z: torch.Tensor) -> torch.Tensor:
        if batch_stats and run.mask is not None:
            return _masked_batch_norm(z, run.mask, flat, factor if run.training else 0.0, m.eps)
        return F.batch_norm(z, flat[0], flat[1], flat[2], flat[3], batch_stats, factor, m.eps)

    return _per_channel(h, spatial, run.n, norm)


def _masked_batch_norm(
    z: torch.Tensor,
    mask: torch.Tensor,
    flat: list[torch.Tensor | None],
    factor: float,
    eps: float,
) -> torch.Tensor:
    """Batch normalization of ``z`` ``[rows, clients * channels, ...]`` over the rows ``mask``
    ``[clients, rows]`` marks: a short last minibatch's padding must not enter its statistics."""
    rows, channels = z.shape[0], z.shape[1]
    per_client = channels // mask.shape[0]
    keep = mask.t().repeat_interleave(per_client, dim=1).view(rows, channels, *[1] * (z.dim() - 2))
    dims = [0, *range(2, z.dim())]
    count = keep.sum(0).reshape(-1) * (z[0, 0].numel())
    shape = [1, channels, *[1] * (z.dim() - 2)]
    mean = (z * keep).sum(dims) / count
    centered = z - mean.view(shape)
    var = (centered.square() * keep).sum(dims) / count
    out = centered * torch.rsqrt(var + eps).view(shape)
    running_mean, running_var, w, b = flat
    if w is not None:
        out = out * w.view(shape)
    if b is not None:
        out = out + b.view(shape)
    if running_mean is not None and running_var is not None and factor:
        with torch.no_grad():
            unbiased = var * count / (count - 1)
            running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
            running_var.mul_(1 - factor).add_(unbiased.detach(), alpha=factor)
    return out


def mix(v: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash (xor-shift-multiply) of int64 values in [0, 2**32).

    Multipliers below 2**31 keep every product inside int64: no overflow to rely on.
    """
    v = v ^ (v >> 16)
    v = (v * 0x7FEB352D) & M32
    v = v ^ (v >> 15)
    v = (v * 0x2C1B3C6D) & M32
    return v ^ (v >> 16)


def client_keys(seeds: list[int], device: torch.device) -> torch.Tensor:
    """Each client's 32-bit dropout key from its 63-bit shuffle seed."""
    s = torch.tensor(seeds, dtype=torch.int64, device=device)
    return mix(mix(s & M32) ^ ((s >> 32) & M32))


def step_keys(keys: torch.Tensor, step: int) -> torch.Tensor:
    """The clients' keys of their local step ``step`` (all active clients are at the same one)."""
    return mix(keys ^ ((step * 0x9E3779B1 + 0x3C6EF372) & M32))


def _dropout(h: torch.Tensor, p: float, index: int, spatial: bool, run: Pass) -> torch.Tensor:
    """Inverted dropout with a mask per client, element, step and layer from :func:`mix`."""
    if not run.training or p == 0.0:
        return h
    if p >= 1.0:
        return h * 0.0
    assert run.keys is not None
    keys = mix(run.keys ^ ((index * 0x85EBCA77 + 0x165667B1) & M32))
    batch = h.shape[0] if spatial else h.shape[1]
    per_row = h.numel() // (batch * run.n)
    element = torch.arange(batch * per_row, device=h.device).view(batch, per_row)
    if spatial:  # [rows, clients, per_row]
        hashed = mix(keys.view(1, -1, 1) ^ ((element.unsqueeze(1) * 0x61C88647) & M32))
    else:  # [clients, rows, per_row]
        hashed = mix(keys.view(-1, 1, 1) ^ ((element.unsqueeze(0) * 0x61C88647) & M32))
    keep = hashed >= int(p * 2**32)
    return h * keep.view(h.shape).to(h.dtype) * (1.0 / (1.0 - p))
