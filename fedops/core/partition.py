"""Split a dataset across sites: IID, or label-skewed with Dirichlet(alpha).

Pure index arithmetic: each function returns one index array per site, so the
same split serves a deployed site (which keeps only its own indices) and a
simulation (which keeps all of them).
"""

from __future__ import annotations

import numpy as np


class SplitError(ValueError):
    """The data cannot be split across the sites as asked (too many sites for the rows, or
    too skewed a split): the number of sites or the skew is the setting to change."""


def iid(num_examples: int, num_sites: int, *, seed: int) -> list[np.ndarray]:
    """Shuffle, then deal the examples into ``num_sites`` near-equal parts."""
    _check_sites(num_examples, num_sites)
    order = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(part) for part in np.array_split(order, num_sites)]


def dirichlet(
    labels: np.ndarray,
    num_sites: int,
    *,
    alpha: float,
    seed: int,
    min_examples: int = 10,
    max_attempts: int = 1000,
) -> list[np.ndarray]:
    """Label-skewed split (Hsu et al. 2019): per class, site shares ~ Dir(alpha).

    Smaller ``alpha`` means more skew. Draws again (bounded) until every site
    holds at least ``min_examples`` examples, so no site is left empty.
    """
    labels = np.asarray(labels)
    _check_sites(len(labels), num_sites)
    if alpha <= 0:
        raise ValueError(f"Dirichlet alpha must be > 0, got {alpha}")
    if min_examples * num_sites > len(labels):
        raise ValueError(
            f"cannot give {num_sites} sites {min_examples} examples each from {len(labels)}"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_attempts):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
        for cls in classes:
            idx = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_sites, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for site, chunk in enumerate(np.split(idx, cuts)):
                parts[site].append(chunk)
        result = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(r) for r in result) >= min_examples:
            return result
    raise SplitError(
        f"no Dirichlet(alpha={alpha}) split gave every one of {num_sites} sites "
        f"{min_examples} examples in {max_attempts} draws; raise alpha or lower num_sites"
    )


def _check_sites(num_examples: int, num_sites: int) -> None:
    if num_sites < 1:
        raise ValueError(f"num_sites must be >= 1, got {num_sites}")
    if num_sites > num_examples:
        raise ValueError(f"cannot split {num_examples} examples across {num_sites} sites")
