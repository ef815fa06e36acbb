"""atomic_write: what a crash or a failed write leaves behind."""

from __future__ import annotations

import errno
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


def test_a_write_cut_short_by_the_file_size_limit_raises_and_leaves_the_old_file(tmp_path):
    """A real short write then a failed one (the process's file size limit, as a full disk would
    cut it): the error reaches the caller, the file keeps its old text, no temporary is left."""
    import subprocess
    import sys

    target = tmp_path / "000001.json"
    atomic_write(target, "old")
    code = ("import errno, resource, signal, sys\n"
            "from pathlib import Path\n"
            "from genesis_core.files import atomic_write\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "try:\n"
            "    atomic_write(Path(sys.argv[1]), 'x' * 10_000, durable=sys.argv[2] == '1')\n"
            "except OSError as exc:\n"
            "    sys.exit(exc.errno)\n")
    for durable in ("0", "1"):
        done = subprocess.run([sys.executable, "-c", code, str(target), durable], capture_output=True, text=True, timeout=60)
        assert done.returncode == errno.EFBIG, done.stderr
        assert target.read_text() == "old" and os.listdir(tmp_path) == ["000001.json"]
    atomic_write(target, "x" * 10_000)  # without the limit, the same write goes through whole
    assert target.read_text() == "x" * 10_000
