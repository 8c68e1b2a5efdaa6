"""A Task view of a built-in federated dataset, so every backend sees one contract."""

from __future__ import annotations

from fedops.data import FederatedData
from fedops.tasks.contract import Task
from fedops.tasks.models import MODELS


def task_from_data(
    data: FederatedData, *, name: str, model: str = "logreg", hidden: int = 64
) -> Task:
    """Client ``i``'s data is its slice of ``data``; the model is sized to it."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {sorted(MODELS)}")

    def build_model():  # type: ignore[no-untyped-def]
        if model == "mlp":
            return MODELS["mlp"](data.num_features, data.num_classes, hidden)
        return MODELS[model](data.num_features, data.num_classes)

    def load_data(site: int, num_sites: int):  # type: ignore[no-untyped-def]
        if num_sites != data.num_clients or not 0 <= site < num_sites:
            raise ValueError(
                f"this dataset has {data.num_clients} clients; asked for site {site} of {num_sites}"
            )
        return data.client_train(site), data.client_test(site)

    server = None
    if data.server_x is not None and data.server_y is not None:
        sx, sy = data.server_x, data.server_y
        server = lambda: (sx, sy)  # noqa: E731

    return Task(name=name, build_model=build_model, load_data=load_data, load_server_data=server)
