"""FedProx's Synthetic(alpha, beta) benchmark (Li et al., MLSys 2020), written from the paper.

Each device k gets its own multinomial logistic model and its own input distribution:

* model:  u_k ~ N(0, alpha);  W_k ~ N(u_k, 1) of shape (classes, features);  b_k ~ N(u_k, 1)
* inputs: B_k ~ N(0, beta);   v_k ~ N(B_k, 1) of shape (features,);  x ~ N(v_k, Sigma)
  with diagonal Sigma_jj = j^-1.2
* labels: y = argmax(softmax(W_k x + b_k))

``alpha`` controls how far the local models differ, ``beta`` how far the local inputs
differ (both used as standard deviations, as the reference generator draws them;
Synthetic(0, 0) and (1, 1) read the same either way). Synthetic-IID gives every device
the same W, b ~ N(0, 1) and x ~ N(0, Sigma). Device sizes follow a power law: the
integer part of lognormal(mean_log, sigma_log) plus ``min_samples``, so a few devices
hold most of the data, as in real cross-device populations.

The whole population is drawn from one ``np.random.default_rng(seed)``, features are
drawn straight into their final float32 arrays (no float64 copy, no per-device lists),
so memory is proportional to the data and 10,000 devices take seconds.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from fedops.data.federated import FederatedData

#: the exponent of the diagonal input covariance, Sigma_jj = j ** -COVARIANCE_DECAY
COVARIANCE_DECAY = 1.2
#: rows per noise chunk: each has its own child generator, so chunks fill in parallel
CHUNK_ROWS = 1 << 16


def synthetic(
    *,
    num_clients: int,
    alpha: float,
    beta: float,
    num_features: int = 60,
    num_classes: int = 10,
    seed: int = 0,
    test_fraction: float = 0.2,
    mean_log: float = 4.0,
    sigma_log: float = 2.0,
    min_samples: int = 50,
    max_samples: int | None = None,
    iid: bool = False,
) -> FederatedData:
    """Generate Synthetic(alpha, beta) (or Synthetic-IID with ``iid=True``) for ``num_clients``.

    Each device's rows are split ``1 - test_fraction`` / ``test_fraction`` into train and
    test (at least one train row each); there is no server hold-out, since every device
    has its own distribution and no single global test set is the right one.
    """
    _check(
        num_clients,
        alpha,
        beta,
        num_features,
        num_classes,
        test_fraction,
        sigma_log,
        min_samples,
        max_samples,
    )
    rng = np.random.default_rng(seed)
    sizes = device_sizes(
        rng,
        num_clients,
        mean_log=mean_log,
        sigma_log=sigma_log,
        min_samples=min_samples,
        max_samples=max_samples,
    )
    n_test = np.minimum(np.rint(sizes * test_fraction).astype(np.int64), sizes - 1)
    n_train = sizes - n_test
    w32, b32, v32 = _device_models(
        rng, num_clients, alpha, beta, num_features=num_features, num_classes=num_classes, iid=iid
    )
    std = (np.arange(1, num_features + 1) ** (-COVARIANCE_DECAY / 2)).astype(np.float32)

    # rows within a device are i.i.d., so train and test are drawn directly, not split
    train_x, train_y, train_off = _draw(rng, n_train, std, w32, b32, v32)
    test_x, test_y, test_off = _draw(rng, n_test, std, w32, b32, v32)
    return FederatedData(
        train_x=train_x,
        train_y=train_y,
        train_offsets=train_off,
        test_x=test_x,
        test_y=test_y,
        test_offsets=test_off,
        num_classes=num_classes,
    )


def _device_models(
    rng: np.random.Generator,
    num_clients: int,
    alpha: float,
    beta: float,
    *,
    num_features: int,
    num_classes: int,
    iid: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each device's (W, b, v), drawn from the population's ``rng`` before any row and
    always in this order, so that one seed names one population."""
    if iid:
        # one model, one input distribution: broadcast instead of copying per device
        w = rng.standard_normal((1, num_classes, num_features))
        b = rng.standard_normal((1, num_classes))
        v = np.zeros((1, num_features))
    else:
        u = rng.normal(0.0, alpha, num_clients)
        w = rng.standard_normal((num_clients, num_classes, num_features)) + u[:, None, None]
        b = rng.standard_normal((num_clients, num_classes)) + u[:, None]
        big_b = rng.normal(0.0, beta, num_clients)
        v = rng.standard_normal((num_clients, num_features)) + big_b[:, None]
    return w.astype(np.float32), b.astype(np.float32), v.astype(np.float32)


def synthetic_iid(**kwargs: Any) -> FederatedData:
    """Synthetic-IID: the same model and input distribution on every device.

    A control for Synthetic(alpha, beta): only the device sizes differ, so any gap
    between the two is due to statistical heterogeneity.
    """
    return synthetic(alpha=0.0, beta=0.0, iid=True, **kwargs)


def device_sizes(
    rng: np.random.Generator,
    num_clients: int,
    *,
    mean_log: float = 4.0,
    sigma_log: float = 2.0,
    min_samples: int = 50,
    max_samples: int | None = None,
) -> np.ndarray:
    """Power-law device sizes: ``int(lognormal(mean_log, sigma_log)) + min_samples``.

    ``max_samples`` caps the heavy tail, so a huge population cannot draw one device
    larger than memory allows.
    """
    raw = rng.lognormal(mean_log, sigma_log, num_clients)
    cap = np.iinfo(np.int64).max // 4 if max_samples is None else max_samples
    sizes = np.minimum(raw, cap).astype(np.int64) + min_samples  # clip first: no overflow
    return np.minimum(sizes, cap)


def _draw(
    rng: np.random.Generator,
    counts: np.ndarray,
    std: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    v: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``counts[k]`` rows for each device k into one flat array, and label them.

    The noise is drawn straight into the float32 output in fixed row chunks, each from
    its own child generator, so threads can share the work (numpy releases the GIL
    while filling) and the result does not depend on how many threads there are. Then
    each device's mean is added in place and its rows labelled by its own model: one
    small matmul per device, never a (rows x classes x features) gather.
    """
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    x = np.empty((int(offsets[-1]), len(std)), dtype=np.float32)
    y = np.empty(len(x), dtype=np.int64)
    starts = range(0, len(x), CHUNK_ROWS)
    children = rng.spawn(len(starts))
    shared = len(w) == 1

    def noise(i: int) -> None:
        rows = x[starts[i] : starts[i] + CHUNK_ROWS]
        children[i].standard_normal(out=rows, dtype=np.float32)
        rows *= std

    def label(devices: np.ndarray) -> None:
        for k in devices:
            lo, hi = offsets[k], offsets[k + 1]
            m = 0 if shared else k
            rows = x[lo:hi]
            rows += v[m]
            # softmax is monotone, so its argmax is the argmax of the logits
            np.argmax(rows @ w[m].T + b[m], axis=1, out=y[lo:hi])

    workers = _workers()
    # The pool's threads are the parallelism: BLAS threads of their own under each per-device
    # matmul oversubscribed the cores and spun (labelling 10,000 devices took 2.1 s instead of
    # 0.23 s on 2 busy cores); one BLAS thread computes the same products.
    with ThreadPoolExecutor(workers) as pool, threadpool_limits(1, user_api="blas"):
        list(pool.map(noise, range(len(starts))))
        list(pool.map(label, np.array_split(np.flatnonzero(counts), 4 * workers)))
    return x, y, offsets


def _workers() -> int:
    """The CPUs this process may run on (not the machine's count, under a cgroup/affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _check(
    num_clients: int,
    alpha: float,
    beta: float,
    num_features: int,
    num_classes: int,
    test_fraction: float,
    sigma_log: float,
    min_samples: int,
    max_samples: int | None,
) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta are standard deviations, >= 0; got {alpha}, {beta}")
    if num_features < 1 or num_classes < 2:
        raise ValueError(
            f"need num_features >= 1 and num_classes >= 2, got {num_features}, {num_classes}"
        )
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if sigma_log < 0:
        raise ValueError(f"sigma_log must be >= 0, got {sigma_log}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    if max_samples is not None and max_samples < min_samples:
        raise ValueError(f"max_samples ({max_samples}) must be >= min_samples ({min_samples})")
