"""A small model zoo for the built-in tasks."""

from __future__ import annotations

from torch import nn


def logistic_regression(num_features: int, num_classes: int) -> nn.Module:
    """Multinomial logistic regression: one linear layer, softmax in the loss."""
    return nn.Sequential(nn.Flatten(), nn.Linear(num_features, num_classes))


def mlp(num_features: int, num_classes: int, hidden: int = 64) -> nn.Module:
    """A one-hidden-layer perceptron."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )


MODELS = {"logreg": logistic_regression, "mlp": mlp}
