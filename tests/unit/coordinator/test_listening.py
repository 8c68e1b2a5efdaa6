"""``RUN_DIR/listening.json``: written atomically, read only for the process that wrote it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedops.coordinator.listening import (
    LISTENING_FILE,
    Listening,
    read_listening,
    remove_listening,
    write_listening,
)


def test_the_record_round_trips_and_names_its_writer(tmp_path: Path):
    record = Listening("127.0.0.1:40123", os.getpid(), "run-1", "127.0.0.1:9100")
    write_listening(tmp_path, record)
    assert read_listening(tmp_path) == record
    assert read_listening(tmp_path, os.getpid()) == record
    assert read_listening(tmp_path, os.getpid() + 1) is None  # a killed predecessor's file
    assert record.port == 40123
    assert [p.name for p in tmp_path.iterdir()] == [LISTENING_FILE]  # no temporary left


def test_only_the_writer_removes_it(tmp_path: Path):
    write_listening(tmp_path, Listening("127.0.0.1:1", os.getpid() + 1, "other"))
    remove_listening(tmp_path)
    assert read_listening(tmp_path) is not None  # another coordinator's: kept
    write_listening(tmp_path, Listening("127.0.0.1:2", os.getpid(), "mine"))
    remove_listening(tmp_path)
    assert not (tmp_path / LISTENING_FILE).exists()
    remove_listening(tmp_path)  # and gone is fine


@pytest.mark.parametrize(
    "text", ["", "{", "[]", "{}", '{"address": 1}', '{"address": "a", "pid": "x"}']
)
def test_a_file_it_did_not_write_reads_as_absent(tmp_path: Path, text: str):
    (tmp_path / LISTENING_FILE).write_text(text)
    assert read_listening(tmp_path) is None
