"""A site's monitoring through the task contract: round-aware data, its reference, its groups.

Tiny task files are written to ``tmp_path`` and loaded as a user would
(:func:`fedops.tasks.load_task`), then driven through :class:`Site` as the
simulation and the agent do (``fit``/``evaluate`` at a round, then ``report``).
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from fedops.core.monitoring.fairness import confusion_counts
from fedops.core.monitoring.profile import (
    LABEL,
    PREDICTION,
    MonitorSpec,
    ReportLimits,
    input_edges,
)
from fedops.core.training import TrainConfig, set_params
from fedops.tasks import Task, load_task
from fedops.tasks.monitor import split_groups, takes_round, window_of
from fedops.tasks.site import Site

CFG = TrainConfig(epochs=1, batch_size=16, lr=0.1)

HEADER = """
import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

CALLS = []   # (site, num_sites, round or None) per load_data call
SEEN = []    # (rows, mean of x) of every training call


def build_model():
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def train(model, data, cfg):
    x, y = data
    SEEN.append((len(x), float(torch.as_tensor(x).mean())))
    return {"train_loss": 0.0}


def _rows(site, n, shift):
    rng = np.random.default_rng(site)
    x = rng.normal(size=(n, 3)).astype(np.float32) + np.float32(shift)
    y = (x[:, 0] > shift).astype(np.int64)
    return x, y
"""

ROUND_AWARE = """
SHIFT_ROUND = 2


def load_data(site, num_sites, round):
    CALLS.append((site, num_sites, round))
    shifted = round >= SHIFT_ROUND
    n_train, n_test = (60, 15) if shifted else (40, 10)
    x, y = _rows(site, n_train + n_test, 5.0 if shifted else 0.0)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
"""

TWO_ARGS = """
def load_data(site, num_sites):
    CALLS.append((site, num_sites, None))
    x, y = _rows(site, 50, 0.0)
    return (x[:40], y[:40]), (x[40:], y[40:])
"""

GROUP_TENSOR = """
def load_data(site, num_sites):
    x, y = _rows(site, 120, 0.0)
    g = (x[:, 1] > 0).astype(np.int64) + 2 * (x[:, 2] > 1)
    test = TensorDataset(*(torch.from_numpy(a[80:]) for a in (x, y, g)))
    return (x[:80], y[:80]), test
"""

SENSITIVE_GROUPS = """
def load_data(site, num_sites):
    x, y = _rows(site, 120, 0.0)
    return (x[:80], y[:80]), (x[80:], y[80:])


def sensitive_groups(x):
    return (torch.as_tensor(x)[:, 1] > 0).long()
"""

BAD_SENSITIVE_GROUPS = """
def load_data(site, num_sites):
    x, y = _rows(site, 120, 0.0)
    return (x[:80], y[:80]), (x[80:], y[80:])


def sensitive_groups(x):
    return np.zeros(len(x) - 1, np.int64)
"""


def _task(tmp_path: Path, body: str, name: str = "task.py") -> Task:
    path = tmp_path / name
    path.write_text(textwrap.dedent(HEADER + body))
    return load_task(str(path))


def _calls(task: Task) -> list:
    return inspect.unwrap(task.load_data).__globals__["CALLS"]


def _seen(task: Task) -> list:
    return inspect.unwrap(task.load_data).__globals__["SEEN"]


def _spec(task: Task) -> MonitorSpec:
    """Bins from the site's own round-0 training data (as a coordinator's held-out data)."""
    (x, _), _ = task.load_data(0, 2, 0) if takes_round(task.load_data) else task.load_data(0, 2)
    _calls(task).clear()
    return MonitorSpec(edges=input_edges(x, bins=5), num_classes=2)


# -- round-aware data ----------------------------------------------------------------------------


def test_takes_round():
    assert takes_round(lambda site, num_sites, round: None)
    assert takes_round(lambda *args: None)
    assert not takes_round(lambda site, num_sites: None)
    assert not takes_round(lambda site, num_sites, *, round=0: None)  # keyword-only: not passed
    assert not takes_round(_NoSignature())  # no signature to read: treated as 2-argument


class _NoSignature:
    @property
    def __signature__(self):
        raise ValueError("no signature")

    def __call__(self, *args):
        return None


def test_a_round_aware_site_reloads_its_data_every_round(tmp_path: Path):
    task = _task(tmp_path, ROUND_AWARE)
    spec = _spec(task)
    site = Site(task, site=1, num_sites=2, train_config=CFG)
    assert site.round_aware
    assert _calls(task) == [(1, 2, 0)]  # at startup, round 0: the reference window
    reference = site.monitor.reference.x.copy()
    assert reference.shape == (40, 3)
    params = site.initial_params()

    # round 1: the same data as the reference
    _, n, _ = site.fit(params, 1, {})
    assert n == 40
    assert site.evaluate(params, 1)[0] == 10
    assert _calls(task) == [(1, 2, 0), (1, 2, 1)]  # once per round, not per instruction
    report1 = site.report(params, spec)
    assert report1 is not None
    assert [d.feature for d in report1.drift] == ["x0", "x1", "x2", LABEL, PREDICTION]
    for d in report1.drift:
        assert (d.psi, d.js, d.ks) == (0.0, 0.0, 0.0), d

    # round 2: the site's data has moved (more rows, shifted by +5)
    _, n, _ = site.fit(params, 2, {})
    assert n == 60 == site.num_train_examples
    assert _seen(task)[-1][0] == 60 and _seen(task)[-1][1] > 4.0
    assert _seen(task)[0][1] < 1.0  # round 1 trained on the unshifted data
    assert site.evaluate(params, 2)[0] == 15
    assert _calls(task) == [(1, 2, 0), (1, 2, 1), (1, 2, 2)]
    report2 = site.report(params, spec)
    assert report2 is not None
    by_name = {d.feature: d for d in report2.drift}
    for name in ("x0", "x1", "x2"):
        assert by_name[name].level == "significant" and by_name[name].alert, by_name[name]
    # the reference is still the round-0 window
    np.testing.assert_array_equal(site.monitor.reference.x, reference)
    for name in report1.reference:
        np.testing.assert_array_equal(report2.reference[name], report1.reference[name])
    assert int(report2.current["x0"].sum()) == 60 and int(report2.reference["x0"].sum()) == 40

    # evaluate alone also moves a site to its round's data
    site.evaluate(params, 3)
    assert _calls(task)[-1] == (1, 2, 3)
    site.evaluate(params)  # no round: stays where it is
    assert len(_calls(task)) == 4


def test_a_two_argument_load_data_is_called_once(tmp_path: Path):
    task = _task(tmp_path, TWO_ARGS)
    spec = _spec(task)
    site = Site(task, site=0, num_sites=2, train_config=CFG)
    assert not site.round_aware
    params = site.initial_params()
    for server_round in (1, 2, 3):
        site.fit(params, server_round, {})
        site.evaluate(params, server_round)
        report = site.report(params, spec)
        assert report is not None and all(d.psi == 0.0 for d in report.drift)
    assert _calls(task) == [(0, 2, None)]


def test_data_handed_to_the_site_is_never_reloaded(tmp_path: Path):
    task = _task(tmp_path, ROUND_AWARE)
    (train, test) = task.load_data(0, 1, 0)
    _calls(task).clear()
    site = Site(task, site=0, num_sites=1, train_config=CFG, data=(train, test))
    assert not site.round_aware
    site.fit(site.initial_params(), 5, {})
    assert _calls(task) == []


# -- sensitive groups ----------------------------------------------------------------------------


def _predicted(site: Site, params, x: np.ndarray) -> np.ndarray:
    model = site.task.build_model()
    set_params(model, params)
    with torch.no_grad():
        return model(torch.from_numpy(x)).argmax(dim=1).numpy()


def test_a_group_tensor_in_the_test_split_gives_fairness_counts(tmp_path: Path):
    task = _task(tmp_path, GROUP_TENSOR)
    spec = _spec(task)
    # no small group left out here: the group column's path is under test
    site = Site(
        task, site=3, num_sites=4, train_config=CFG, report_limits=ReportLimits(min_count=1)
    )
    # what the task returned, by hand
    _, test = task.load_data(3, 4)
    x, y, g = (t.numpy() for t in test.tensors)
    assert set(np.unique(g)) <= {0, 1, 2, 3} and len(np.unique(g)) >= 2
    # the group column never reaches the model or the evaluation
    assert isinstance(site.test_data, tuple | TensorDataset)
    stripped = (
        site.test_data.tensors if isinstance(site.test_data, TensorDataset) else site.test_data
    )
    assert len(stripped) == 2
    np.testing.assert_array_equal(site.test_groups, g)
    params = site.initial_params()
    n, metrics = site.evaluate(params, 1)
    assert n == 40 and 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics["loss"])
    report = site.report(params, spec)
    assert report is not None
    expected = confusion_counts(y, _predicted(site, params, x), g, positive_label=1)
    assert report.fairness == expected
    assert sum(c.n for c in report.fairness.values()) == 40


def test_a_sensitive_groups_function_gives_fairness_counts(tmp_path: Path):
    task = _task(tmp_path, SENSITIVE_GROUPS)
    assert task.sensitive_groups is not None
    spec = _spec(task)
    exact = ReportLimits(min_count=1)  # no small cell left out: the groups' path is under test
    site = Site(task, site=2, num_sites=4, train_config=CFG, report_limits=exact)
    assert site.test_groups is None
    _, (x, y) = task.load_data(2, 4)
    params = site.initial_params()
    n, metrics = site.evaluate(params, 1)
    assert n == 40 and np.isfinite(metrics["loss"])
    report = site.report(params, spec)
    assert report is not None
    groups = (x[:, 1] > 0).astype(np.int64)
    assert report.fairness == confusion_counts(y, _predicted(site, params, x), groups)
    assert set(report.fairness) == {0, 1}


def test_sensitive_groups_of_the_wrong_length_is_refused(tmp_path: Path):
    task = _task(tmp_path, BAD_SENSITIVE_GROUPS)
    spec = _spec(task)
    site = Site(task, site=0, num_sites=2, train_config=CFG)
    params = site.initial_params()
    site.evaluate(params, 1)  # evaluation itself does not need groups
    with pytest.raises(ValueError, match=r"sensitive_groups\(\) returned 39 ids for 40 rows"):
        site.report(params, spec)


def test_a_task_without_groups_reports_drift_only(tmp_path: Path):
    task = _task(tmp_path, TWO_ARGS)
    site = Site(task, site=0, num_sites=2, train_config=CFG)
    report = site.report(site.initial_params(), _spec(task))
    assert report is not None and report.fairness == {} and report.drift


# -- helpers -------------------------------------------------------------------------------------


def test_split_groups_and_window_of():
    x = torch.randn(6, 3)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    g = torch.tensor([[0], [1], [1], [0], [2], [2]])
    for data in (TensorDataset(x, y, g), (x, y, g)):
        rest, groups = split_groups(data)
        np.testing.assert_array_equal(groups, [0, 1, 1, 0, 2, 2])
        assert groups.dtype == np.int64
        window = window_of(rest, groups)
        np.testing.assert_array_equal(window.x, x.numpy())
        np.testing.assert_array_equal(window.y, y.numpy())
    assert split_groups((x, y)) == ((x, y), None)
    two = TensorDataset(x, y)
    assert split_groups(two) == (two, None)


def test_only_a_round_or_a_required_third_argument_is_the_round():
    from fedops.tasks.monitor import takes_round

    def two(site, num_sites): ...
    def named(site, num_sites, round=0): ...
    def required(site, num_sites, r): ...
    def optional(site, num_sites, data_dir="/data"): ...
    def star(*args): ...

    assert [takes_round(f) for f in (two, named, required, optional, star)] == [
        False,
        True,
        True,
        False,
        True,
    ]
