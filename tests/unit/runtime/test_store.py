"""Unit tests for fedops.runtime.store: the run directory (SQLite + safetensors)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from torch import nn

from fedops.core.params import digest, digest_header, le_bytes, specs_of
from fedops.core.training import get_params
from fedops.runtime.checkpoint_file import read_checkpoint
from fedops.runtime.store import Participant, RunStore, StoreError, config_digest


def _params(value: float = 0.0) -> dict[str, np.ndarray]:
    # insertion order differs from sorted order, so order preservation is visible
    return {
        "z.weight": np.arange(6, dtype=np.float32).reshape(2, 3) + value,
        "a.bias": np.array([value, -1.5], dtype=np.float64),
        "m.steps": np.array([3, 4], dtype=np.int64),
        "b.mask": np.array([True, False, True]),
        "h.half": np.array([0.5, value], dtype=np.float16),
        "u.bytes": np.array([[0, 255]], dtype=np.uint8),
    }


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "run")
    yield s
    s.close()


def _ckpt(store: RunStore, r: int):
    return store.dir / "checkpoints" / f"round-{r:05d}.safetensors"


# --- run identity -----------------------------------------------------------------------------


def test_open_run_creates_then_reopens_the_same_run(tmp_path):
    first = RunStore(tmp_path / "r")
    run_id, resumed = first.open_run({"rounds": 3})
    assert not resumed
    assert len(run_id) == 12
    assert first.stored_config_digest() == config_digest({"rounds": 3})
    first.close()
    again = RunStore(tmp_path / "r")
    assert again.open_run({"rounds": 99}) == (run_id, True)
    assert again.stored_config_digest() == config_digest({"rounds": 3})
    again.close()


def test_fresh_store_has_no_config_or_rounds(store):
    assert store.stored_config_digest() is None
    assert store.last_round() is None
    assert store.model_digest(0) is None


def test_config_digest_ignores_key_order_but_not_values():
    assert config_digest({"a": 1, "b": "x"}) == config_digest({"b": "x", "a": 1})
    assert config_digest({"a": 1}) != config_digest({"a": 2})


# --- rounds and checkpoints -------------------------------------------------------------------


def test_save_and_load_round_preserve_order_dtypes_and_values(store):
    params = _params(2.0)
    returned = store.save_round(0, params, {})
    assert returned == digest(params) == store.model_digest(0)
    loaded = store.load_round(0)
    assert list(loaded) == list(params)
    for name, arr in params.items():
        assert loaded[name].dtype == arr.dtype, name
        assert loaded[name].shape == arr.shape, name
        np.testing.assert_array_equal(loaded[name], arr)
    assert digest(loaded) == digest(params)
    assert store.last_round() == 0


def test_read_checkpoint_follows_the_recorded_order(store):
    store.save_round(0, _params(), {})
    assert list(read_checkpoint(_ckpt(store, 0))) == list(_params())


def test_save_round_accepts_non_contiguous_arrays(store):
    view = np.arange(12, dtype=np.float32).reshape(3, 4).T
    store.save_round(0, {"w": view}, {})
    np.testing.assert_array_equal(store.load_round(0)["w"], view)


def test_save_and_load_round_with_a_zero_dim_tensor(store):
    params = get_params(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    assert params["1.num_batches_tracked"].shape == ()
    store.save_round(0, params, {})
    assert digest(store.load_round(0)) == digest(params)


def test_load_round_detects_a_tampered_checkpoint(store):
    store.save_round(0, _params(), {})
    path = _ckpt(store, 0)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # flip one bit of the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="does not match its recorded sha256"):
        store.load_round(0)


def test_load_round_detects_a_checkpoint_swapped_for_another_round(store):
    store.save_round(1, _params(1.0), {"acc": 0.1})
    store.save_round(2, _params(2.0), {"acc": 0.2})
    _ckpt(store, 1).write_bytes(_ckpt(store, 2).read_bytes())
    with pytest.raises(StoreError, match="sha256"):
        store.load_round(1)


def _record_model_digest(store: RunStore, r: int, value: str) -> None:
    with store._db:
        store._db.execute("UPDATE rounds SET model_digest = ? WHERE round = ?", (value, r))


def _legacy_digest(params: dict[str, np.ndarray]) -> str:
    """A model digest as runs before fedops.v1.4 recorded it: bare SHA-256 hex."""
    h = hashlib.sha256(digest_header(specs_of(params)))
    for arr in params.values():
        h.update(le_bytes(arr))
    return h.hexdigest()


def test_a_round_recorded_with_an_older_runs_sha256_digest_still_loads(store):
    store.save_round(0, _params(), {})
    assert store.model_digest(0).startswith("blake3:")
    _record_model_digest(store, 0, _legacy_digest(_params()))
    assert digest(store.load_round(0)) == digest(_params())


def test_an_older_runs_sha256_digest_of_another_model_is_still_a_mismatch(store):
    store.save_round(0, _params(), {})
    _record_model_digest(store, 0, _legacy_digest(_params(1.0)))
    with pytest.raises(StoreError, match="does not match the recorded model digest"):
        store.load_round(0)


@pytest.mark.parametrize("recorded", ["md5:" + "0" * 32, "sha256:" + "0" * 64, "", "blake3:zz"])
def test_a_recorded_digest_fedops_cannot_read_refuses_the_checkpoint(store, recorded):
    store.save_round(0, _params(), {})
    _record_model_digest(store, 0, recorded)
    with pytest.raises(StoreError, match=r"round 0: .* is not a model digest fedops reads"):
        store.load_round(0)


@pytest.mark.parametrize("column", ["model_digest", "checkpoint", "checkpoint_sha256"])
def test_a_round_row_made_a_blob_is_refused_and_an_older_round_resumes(store, column):
    """An operator's edit that turns a column into a BLOB is a clear StoreError (never a
    TypeError), so a resume falls back to the newest round that still verifies."""
    for r in range(3):
        store.save_round(r, _params(float(r)), {})
    with store._db:
        store._db.execute(f"UPDATE rounds SET {column} = CAST({column} AS BLOB) WHERE round = 2")
    with pytest.raises(StoreError, match=r"round 2's row .* is not text"):
        store.load_round(2)
    newest = store.newest_intact(2)
    assert newest is not None and newest[0] == 1


def test_load_round_of_an_uncommitted_round_fails(store):
    with pytest.raises(StoreError, match="round 4 was never committed"):
        store.load_round(4)


def test_load_round_with_a_missing_checkpoint_fails(store):
    store.save_round(0, _params(), {})
    _ckpt(store, 0).unlink()
    with pytest.raises(StoreError, match="is missing"):
        store.load_round(0)


def test_save_round_leaves_no_temporary_file(store):
    store.save_round(0, _params(), {})
    assert sorted(p.name for p in (store.dir / "checkpoints").iterdir()) == [
        "round-00000.safetensors"
    ]


def test_prune_keeps_the_newest_checkpoints_and_round_zero(tmp_path):
    store = RunStore(tmp_path / "run", keep_checkpoints=2)
    for r in range(6):
        store.save_round(r, _params(float(r)), {"r": r})
    names = sorted(p.name for p in (store.dir / "checkpoints").iterdir())
    assert names == [
        "round-00000.safetensors",
        "round-00004.safetensors",
        "round-00005.safetensors",
    ]
    np.testing.assert_array_equal(store.load_round(0)["a.bias"], [0.0, -1.5])
    np.testing.assert_array_equal(store.load_round(5)["a.bias"], [5.0, -1.5])
    with pytest.raises(StoreError, match="missing"):
        store.load_round(3)
    # pruned rounds stay committed: their metrics and digests are still there
    assert store.last_round() == 5
    assert store.model_digest(3) == digest(_params(3.0))
    assert [m["round"] for m in store.round_metrics()] == [1, 2, 3, 4, 5]
    store.close()


def test_keep_checkpoints_is_at_least_one(tmp_path):
    store = RunStore(tmp_path / "run", keep_checkpoints=0)
    for r in range(4):
        store.save_round(r, _params(float(r)), {})
    names = sorted(p.name for p in (store.dir / "checkpoints").iterdir())
    assert names == ["round-00000.safetensors", "round-00003.safetensors"]
    store.close()


# --- metrics, participants, rejections, summary -----------------------------------------------


def test_metrics_jsonl_matches_committed_rounds(store):
    store.save_round(0, _params(), {})
    assert not (store.dir / "metrics.jsonl").exists()  # round 0 is not a training round
    for r in (1, 2, 3):
        store.save_round(r, _params(float(r)), {"eval_accuracy": r / 10, "num_clients": r})
    lines = (store.dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"round": 1, "eval_accuracy": 0.1, "num_clients": 1},
        {"round": 2, "eval_accuracy": 0.2, "num_clients": 2},
        {"round": 3, "eval_accuracy": 0.3, "num_clients": 3},
    ]
    assert [json.loads(line) for line in lines] == store.round_metrics()
    assert not (store.dir / "metrics.jsonl.tmp").exists()


def test_write_metrics_jsonl_rebuilds_a_damaged_file(store):
    for r in (1, 2):
        store.save_round(r, _params(), {"loss": float(r)})
    (store.dir / "metrics.jsonl").write_text("garbage\n")
    store.write_metrics_jsonl()
    lines = (store.dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2]


def test_each_round_appends_one_line_and_leaves_the_earlier_ones_alone(store):
    """A round adds its line; the earlier lines are not rewritten (quadratic over a long
    run), and the file stays what a full rewrite would produce."""
    for r in (1, 2):
        store.save_round(r, _params(), {"loss": float(r)})
    path = store.dir / "metrics.jsonl"
    before = path.stat().st_ino
    store.save_round(3, _params(), {"loss": 3.0})
    assert path.stat().st_ino == before  # appended in place, not replaced
    appended = path.read_text()
    store.write_metrics_jsonl()
    assert path.read_text() == appended


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_text("garbage\n"),  # replaced by someone else
        lambda p: p.unlink(),  # deleted
        lambda p: p.write_text(p.read_text() + '{"round": 9}\n'),  # grown by someone else
    ],
)
def test_a_metrics_file_changed_behind_the_store_is_rewritten_whole(store, damage):
    for r in (1, 2):
        store.save_round(r, _params(), {"loss": float(r)})
    damage(store.dir / "metrics.jsonl")
    store.save_round(3, _params(), {"loss": 3.0})
    lines = (store.dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == store.round_metrics()


def test_a_reopened_store_rewrites_before_it_appends(tmp_path):
    """A crash can leave half a line: the next process's first round rewrites the file."""
    first = RunStore(tmp_path)
    first.save_round(1, _params(), {"loss": 1.0})
    first.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"round": 2, "lo')  # torn append
    second = RunStore(tmp_path)
    try:
        second.save_round(2, _params(), {"loss": 2.0})
        lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == second.round_metrics()
        assert [json.loads(line)["round"] for line in lines] == [1, 2]
    finally:
        second.close()


def test_the_summary_brings_a_round_short_metrics_file_up_to_date(store):
    """Ctrl-C between a round's commit and its metrics.jsonl rewrite loses no line."""
    store.open_run({"rounds": 3})
    for r in (1, 2):
        store.save_round(r, _params(), {"loss": float(r)})
    (store.dir / "metrics.jsonl").write_text(json.dumps({"round": 1, "loss": 1.0}) + "\n")
    summary = store.write_summary({"status": "interrupted"})
    lines = (store.dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2]
    assert summary["rounds_completed"] == len(lines)


def test_participants_roundtrip(store):
    people = [
        Participant(phase="fit", node_id="n1", site="hospital-a", outcome="ok", num_examples=40),
        Participant(phase="fit", node_id="n2", site="b", outcome="rejected", reason="NaN"),
    ]
    store.save_round(1, _params(), {}, people)
    store.save_round(2, _params(), {}, people[:1])
    assert store.participants(1) == people
    assert store.participants(2) == people[:1]
    assert store.participants(3) == []


def test_rejections_are_recorded_in_order(store):
    store.record_rejection(1, "n1", "INVALID_ARGUMENT", "NaN in w")
    store.record_rejection(2, "n2", "PERMISSION_DENIED", "bad token")
    assert store.rejections() == [
        {"round": 1, "node_id": "n1", "code": "INVALID_ARGUMENT", "reason": "NaN in w"},
        {"round": 2, "node_id": "n2", "code": "PERMISSION_DENIED", "reason": "bad token"},
    ]


def test_write_summary(store):
    run_id, _ = store.open_run({"rounds": 2})
    store.save_round(0, _params(), {})
    store.save_round(1, _params(1.0), {"acc": 0.5})
    store.save_round(2, _params(2.0), {"acc": 0.75})
    store.record_rejection(2, "n", "X", "y")
    summary = store.write_summary({"status": "completed"})
    assert summary == {
        "run_id": run_id,
        "config_digest": config_digest({"rounds": 2}),
        "rounds_completed": 2,
        "final_metrics": {"round": 2, "acc": 0.75},
        "model_digest": digest(_params(2.0)),
        "rejections": 1,
        "status": "completed",
        "model_file": "model.safetensors",
        "model_round": 2,
    }
    assert json.loads((store.dir / "summary.json").read_text()) == summary


def test_state_survives_reopening(tmp_path):
    first = RunStore(tmp_path / "run")
    first.open_run({})
    first.save_round(0, _params(), {})
    first.save_round(1, _params(1.0), {"acc": 0.5})
    first.close()
    second = RunStore(tmp_path / "run")
    assert second.last_round() == 1
    assert digest(second.load_round(1)) == digest(_params(1.0))
    assert second.round_metrics() == [{"round": 1, "acc": 0.5}]
    second.close()


def test_final_model_file_has_the_last_rounds_parameters_and_names(store, tmp_path):
    store.open_run({"rounds": 2})
    store.save_round(1, _params(1.0), {})
    store.save_round(2, _params(2.0), {})
    store.write_summary({"status": "completed"})
    saved = read_checkpoint(store.dir / "model.safetensors")
    expected = _params(2.0)
    assert list(saved) == list(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(saved[name], value)
