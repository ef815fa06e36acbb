"""atomic_write: what a crash or a failed write leaves behind; trimming a cache: what it leaves."""

from __future__ import annotations

import errno
import os
import stat
import threading

import pytest

from genesis_core.files import TRIMMED, atomic_write, trim_least_recently_used


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


def test_trimming_a_cache_never_follows_a_link_out_of_it_and_a_reader_keeps_the_file_it_reads(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.bin").write_bytes(b"k" * 5000)
    cache = tmp_path / "cache"
    (cache / "w").mkdir(parents=True)
    (cache / "w" / "a.f8").write_bytes(b"a" * 3000)
    (cache / "b.npz").write_bytes(b"b" * 2000)
    os.symlink(outside, cache / "dir-link")
    os.symlink(outside / "keep.bin", cache / "file-link")
    os.mkfifo(cache / "pipe")
    assert trim_least_recently_used(tmp_path / "missing", 0, 0) == [] and not (tmp_path / "missing").exists()
    assert trim_least_recently_used(cache, 5000, 0) == []  # 5,000 bytes its own: the links' 10,000 are not
    with open(cache / "w" / "a.f8", "rb") as reader:
        assert reader.read(10) == b"a" * 10
        removed = trim_least_recently_used(cache, 0, 0)
        assert reader.read() == b"a" * 2990
    assert sorted(removed) == [cache / "b.npz", cache / "w" / "a.f8"]
    assert sorted(os.listdir(cache)) == sorted([TRIMMED, "dir-link", "file-link", "pipe"])  # w/ emptied, removed
    assert (outside / "keep.bin").read_bytes() == b"k" * 5000 and os.listdir(outside) == ["keep.bin"]
