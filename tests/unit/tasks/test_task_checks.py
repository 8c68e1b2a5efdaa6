"""A user's task that breaks its contract is named at the function that broke it."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from fedops.tasks import load_task
from fedops.tasks.contract import TaskError

HEAD = """
import numpy as np
import torch
X = np.random.default_rng(0).random((20, 4)).astype("float32")
"""


def _task(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "task.py"
    path.write_text(HEAD + body)
    return path


def test_build_model_returning_none_is_named(tmp_path):
    task = load_task(str(_task(tmp_path, '''
def build_model():
    return None
def load_data(site, num_sites):
    return (X, np.zeros(20, dtype=int)), (X, np.zeros(20, dtype=int))
''')))  # fmt: skip
    with pytest.raises(TaskError, match=r"build_model\(\) returned None; it must return a torch"):
        task.build_model()


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        ("np.arange(20) % 5", r"train split: labels run up to 4, but build_model\(\)'s model "
         r"has 3 outputs \(labels must be 0\.\.2\)"),
        ("np.arange(20) % 3 - 1", "train split: label -1 is negative"),
        ("torch.arange(20) % 7", "labels run up to 6"),
    ],
)  # fmt: skip
def test_labels_the_model_cannot_output_are_named(tmp_path, labels, words):
    task = load_task(str(_task(tmp_path, f'''
def build_model():
    return torch.nn.Linear(4, 3)
def load_data(site, num_sites):
    return (X, {labels}), (X, np.zeros(20, dtype=int))
''')))  # fmt: skip
    with pytest.raises(TaskError, match=words):
        task.load_data(0, 2)


def test_good_data_datasets_and_regression_targets_pass_and_signatures_are_kept(tmp_path):
    task = load_task(str(_task(tmp_path, '''
def build_model():
    return torch.nn.Linear(4, 3)
def load_data(site, num_sites, round):
    train = torch.utils.data.TensorDataset(torch.tensor(X), torch.zeros(20, dtype=torch.long))
    return train, (X, np.arange(20) % 3)
''')))  # fmt: skip
    train, test = task.load_data(1, 2, 0)
    assert len(train) == 20 and test[1].max() == 2
    assert list(inspect.signature(task.load_data).parameters) == ["site", "num_sites", "round"]
    float_targets = (np.zeros((2, 4), "float32"), np.array([0.5, 9.0]))
    from fedops.tasks.task_checks import _check_labels  # regression targets are not labels

    _check_labels(float_targets[1], 3, "here")
    assert isinstance(task.build_model(), torch.nn.Module)


def test_load_data_must_return_two_splits(tmp_path):
    task = load_task(str(_task(tmp_path, '''
def build_model():
    return torch.nn.Linear(4, 3)
def load_data(site, num_sites):
    return X
''')))  # fmt: skip
    with pytest.raises(TaskError, match=r"load_data\(site=0\) returned ndarray; it must return"):
        task.load_data(0, 1)


@pytest.mark.parametrize(
    "train",
    [
        "(X[:0], np.zeros(0, dtype=int))",
        "torch.utils.data.TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))",
    ],
)
def test_a_site_with_no_training_rows_is_an_error_naming_the_site(tmp_path, train):
    task = load_task(str(_task(tmp_path, f'''
def build_model():
    return torch.nn.Linear(4, 3)
def load_data(site, num_sites):
    train = {train} if site == 1 else (X, np.zeros(20, dtype=int))
    return train, (X, np.zeros(20, dtype=int))
''')))  # fmt: skip
    task.load_data(0, 3)  # the other sites' data is fine
    with pytest.raises(
        TaskError, match=r"load_data\(site=1, num_sites=3\) returned an empty train split"
    ):
        task.load_data(1, 3)
