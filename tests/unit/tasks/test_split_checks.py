"""Task data mistakes are refused at load, as a TaskError naming the task, site and split.

A NaN feature, labels that are not whole numbers, X and y of different lengths, sites
whose features differ, a model whose input does not fit the data, and a train() or
load_server_data() that returns the wrong thing: each used to fail deep in a round (or
never: a NaN ended the run as no_progress with nothing naming the input).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedops.core.training import TrainConfig
from fedops.data.materialize import DataError, split_arrays
from fedops.tasks import load_task
from fedops.tasks.contract import TaskError

HEAD = """
import numpy as np
import torch
X = np.random.default_rng(0).random((20, 4)).astype("float32")
Y = np.arange(20) % 2
def build_model():
    return torch.nn.Linear(4, 2)
"""


def _task(tmp_path: Path, body: str):
    path = tmp_path / "task.py"
    path.write_text(HEAD + body)
    return load_task(str(path))


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (  # issue 10: a NaN feature, named by site, split and row
            "def load_data(site, num_sites):\n    x = X.copy(); x[3, 1] = np.nan\n"
            "    return (X, Y), (x, Y)",
            r"load_data\(site=0\) test split: features hold NaN or infinity \(1 row, the "
            r"first: row 3\)",
        ),
        (  # ... in a tensor, in a TensorDataset
            "def load_data(site, num_sites):\n    x = torch.tensor(X); x[5, 0] = float('inf')\n"
            "    return torch.utils.data.TensorDataset(x, torch.tensor(Y)), (X, Y)",
            r"train split: features hold NaN or infinity \(1 row, the first: row 5\)",
        ),
        (
            "def load_data(site, num_sites):\n    return (X, Y[:10]), (X, Y)",
            r"train split has 20 rows of features but 10 labels",
        ),
        (
            "def load_data(site, num_sites):\n    return (X, Y + 0.5), (X, Y)",
            r"train split: labels must be integers \(class indices 0, 1, \.\.\.\), got 0\.5",
        ),
        (
            "def build_model():\n    return torch.nn.Linear(5, 2)\n"
            "def load_data(site, num_sites):\n    return (X, Y), (X, Y)",
            r"train split: build_model\(\)'s model fails on its first rows \(features of "
            r"shape \(4,\)\): RuntimeError: .*does the model's input size match the data",
        ),
    ],
    ids=["nan", "inf-tensor-dataset", "lengths", "float-labels", "model-width"],
)
def test_bad_data_is_a_task_error_naming_the_split(tmp_path, body, words):
    task = _task(tmp_path, body)
    with pytest.raises(TaskError, match=words):
        task.load_data(0, 2)


def test_sites_whose_features_differ_are_named(tmp_path):
    task = _task(tmp_path, '''
def load_data(site, num_sites):
    x = X[:, :3] if site else X
    return (x, Y), (x, Y)
''')  # fmt: skip
    task.load_data(0, 2)
    with pytest.raises(TaskError, match=r"site=1\) train split has features of shape \(3,\) "
                       r"per row, but load_data\(site=0\) train split has \(4,\)"):  # fmt: skip
        task.load_data(1, 2)


def test_a_task_with_its_own_train_may_feed_its_model_and_targets_its_way(tmp_path):
    task = _task(tmp_path, '''
def build_model():
    return torch.nn.Embedding(10, 2)  # takes indices: no float32 probe can run it
def load_data(site, num_sites):
    return (np.arange(20) % 10, Y + 0.5), (np.arange(20) % 10, Y + 0.5)
def train(model, data, config):
    return "done"
''')  # fmt: skip
    task.load_data(0, 2)  # regression targets, and a model the default loop would not take
    assert task.train is not None
    with pytest.raises(TaskError, match=r"train\(\) must return a dict of metrics, got str"):
        task.train(task.build_model(), (np.zeros(2), np.zeros(2)), TrainConfig())


def test_load_server_data_must_return_data(tmp_path):
    task = _task(tmp_path, "def load_data(site, num_sites):\n    return (X, Y), (X, Y)\n"
                           "def load_server_data():\n    return 3")  # fmt: skip
    assert task.load_server_data is not None
    with pytest.raises(TaskError, match=r"load_server_data\(\) returned int; it must return"):
        task.load_server_data()


def test_good_data_passes_untouched(tmp_path):
    task = _task(tmp_path, '''
def load_data(site, num_sites):
    return (X, Y.astype("float32")), (torch.tensor(X), torch.tensor(Y))
def load_server_data():
    return X, Y
''')  # fmt: skip
    train, test = task.load_data(1, 2)
    assert train[0] is not None and len(test[1]) == 20
    assert task.load_server_data()[0].shape == (20, 4)


class _Items(torch.utils.data.Dataset):
    def __init__(self, x: np.ndarray) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], 0


def test_a_dataset_read_item_by_item_is_checked_finite_there():
    x = np.ones((4, 3), np.float32)
    x[2, 2] = np.nan
    with pytest.raises(DataError, match=r"load_data\(0\) train: features hold NaN or infinity"):
        split_arrays("t", _Items(x), "load_data(0) train")
    split_arrays("t", _Items(np.ones((4, 3), np.float32)), "load_data(0) train")


def test_float_labels_are_said_to_be_integers_not_negative():
    with pytest.raises(DataError, match=r"labels must be integers \(class indices.*got 0\.5"):
        split_arrays("t", (np.ones((2, 3)), np.array([0.5, 1.0])), "load_data(0) train")
    with pytest.raises(DataError, match="has label -1; labels are class indices, from 0"):
        split_arrays("t", (np.ones((2, 3)), np.array([-1, 1])), "load_data(0) train")
