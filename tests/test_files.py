"""atomic_write: what a crash or a failed write leaves behind."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from genesis_core.files import atomic_write


def test_a_write_into_new_folders_replaces_nothing_else_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a" / "b" / "000001.json"
    atomic_write(target, "{}", durable=False)
    atomic_write(target, b"{\"x\": 1}")
    assert target.read_text() == "{\"x\": 1}" and os.listdir(target.parent) == ["000001.json"]


def test_a_failed_write_into_a_pipe_raises_and_leaves_the_pipe(tmp_path):
    """A special file is written into, never replaced, also when the write fails (the reader goes
    away after one byte): the error reaches the caller, and no file takes the pipe's place."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def read_one_byte() -> None:
        with open(fifo, "rb") as fh:
            fh.read(1)

    reader = threading.Thread(target=read_one_byte)
    reader.start()
    with pytest.raises(BrokenPipeError):
        atomic_write(fifo, "x" * 1_000_000)
    reader.join(timeout=60)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and os.listdir(tmp_path) == ["pipe"]
