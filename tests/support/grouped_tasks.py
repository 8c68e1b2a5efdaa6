"""Tasks built in code for tests that need one no bundled task is."""

from __future__ import annotations

import numpy as np
import torch

from fedops.tasks import Task, load_task


def grouped_digits() -> Task:
    """Digits with a sensitive_groups() function (ink above 0.3 on average: group 1), so
    fairness counts have groups to compare on the test windows."""
    base = load_task("digits")

    def groups(x: torch.Tensor) -> np.ndarray:
        return (x.reshape(len(x), -1).mean(dim=1) > 0.3).long().numpy()

    return Task(
        name="digits-grouped",
        build_model=base.build_model,
        load_data=base.load_data,
        load_server_data=base.load_server_data,
        sensitive_groups=groups,
    )
