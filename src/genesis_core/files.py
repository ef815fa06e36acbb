"""Writing result files so that a crash never leaves one half written, and a failed write leaves
nothing; keeping a cache's files to a size; finding the files a stored config names."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

_TEMPORARY = re.compile(r"(.*)\.(\d+)\.tmp")  # atomic_write's: the path written and the writer's pid


_workdir: ContextVar[str | None] = ContextVar("genesis_workdir", default=None)


@contextlib.contextmanager
def paths_from(workdir: str | None) -> Iterator[None]:
    """Within it, a relative path a config names is read from ``workdir`` (``BacktestConfig.workdir``:
    where a stored config first ran) where that folder holds it: a trial re-run from its artifact
    in another folder read no file. None: from the working folder alone."""
    token = _workdir.set(workdir)
    try:
        yield
    finally:
        _workdir.reset(token)


def located(path: str) -> Path:
    """Where the file a config names as ``path`` is read from (``paths_from``); as the path alone
    says where the workdir does not hold it (a run copied to another machine's project folder)."""
    base = _workdir.get()
    if base is None or os.path.isabs(path) or base == os.getcwd():  # said as written where genesis runs there
        return Path(path)
    there = Path(base) / path
    return there if there.exists() else Path(path)


def not_found_where(path: str) -> str:
    """Where a missing ``path`` was looked for, for its error: `` in HERE``, and the workdir."""
    if os.path.isabs(path):
        return ""
    base, here = _workdir.get(), os.getcwd()
    return f" in {here}" + ("" if base in (None, here) else f", nor in {base} where it first ran")


MAX_RECORD_BYTES = 1 << 30  # a result file of 5,000,000 bars' equity and drawdown is about 400 MB


def not_a_file(mode: int) -> str | None:
    """What a path of ``os.stat`` mode ``mode`` is when it is not a regular file (a pipe, a device,
    a folder, a socket); None when it is one."""
    if stat.S_ISREG(mode):
        return None
    return "a folder" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) else \
        "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"


def capped_bytes(path: Path, limit: int) -> tuple[bytes, int]:
    """Up to ``limit`` + 1 bytes of ``path``, and its size as it is opened; nothing is read when that
    size is past ``limit`` already (a file past it is refused by its size, not read first). More
    than ``limit`` bytes read says the file grew after it was looked at."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        return (fh.read(limit + 1) if size <= limit else b""), size


def read_file(path: Path, limit: int = MAX_RECORD_BYTES) -> bytes:
    """The bytes of ``path``, a regular file (or a link to one) of at most ``limit`` bytes; an
    OSError saying what it is otherwise, looked at before it is opened: a pipe waited for a writer
    for ever, and /dev/zero (of size 0) was read until memory ran out."""
    kind = not_a_file(os.stat(path).st_mode)
    if kind is not None:
        raise OSError(errno.EINVAL, f"{kind}, not a file", os.fspath(path))
    raw, size = capped_bytes(path, limit)
    if max(size, len(raw)) > limit:
        raise OSError(errno.EFBIG, f"more than {limit:,} bytes", os.fspath(path))
    return raw


def written_as(name: str) -> str:
    """The path a writer's temporary file (``atomic_write``'s) stands for; another path as it is."""
    match = _TEMPORARY.fullmatch(name)
    return name if match is None else match.group(1)


def atomic_write(path: Path, text: str | bytes, durable: bool = True) -> None:
    """Write to a temporary file beside ``path``, flush it to disk, rename it over ``path`` (atomic on
    POSIX) and flush the folder, so the new file survives a power cut. On any failure (a full disk,
    an interrupt) the temporary file is removed and ``path`` is as it was. A ``path`` that exists
    but is not a regular file (``/dev/null``, a pipe) is written to, never replaced. Without
    ``durable`` nothing is flushed: the caller makes many files durable at once (``sync_all``)."""
    data = text.encode() if isinstance(text, str) else text
    name = os.fspath(path)  # os calls, not pathlib's or file objects: a trial's artifact is one of these, thousands a run
    try:
        special = not stat.S_ISREG(os.stat(name).st_mode)
    except OSError:  # missing (or out of reach: the write below says why)
        special = False
    if special:
        with open(name, "wb") as fh:
            fh.write(data)
        return
    tmp = f"{name}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileNotFoundError:  # a new folder
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, flags, 0o666)
        try:
            rest = memoryview(data)
            while rest:
                rest = rest[os.write(fd, rest):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed os.write names no file: this one
            raise OSError(exc.errno, exc.strerror, name) from None
        raise
    if not durable:
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_whole(path: Path) -> bool:
    """Whether the JSON object at ``path`` is whole: one written without ``durable`` that a power
    loss caught before it reached the disk is gone, empty or cut short, and an object's last byte is
    ``}``."""
    try:
        if not_a_file(os.stat(path).st_mode):  # a pipe would wait for a writer for ever
            return False
        with open(path, "rb") as fh:
            fh.seek(-1, 2)
            return fh.read(1) == b"}"
    except OSError:  # missing, or empty (a seek before the start)
        return False


def sync_all() -> None:
    """Flush every file written without ``durable`` (and the folders naming them) to disk: one
    system-wide flush for a batch of files instead of two per file."""
    os.sync()


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove temporary files in ``folder`` left by a process that was killed while writing (its
    pid, in the name, no longer runs); returns them. By name, not by pattern: a feature folder
    of a hundred files took pathlib's glob 0.15 ms."""
    removed = []
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.name.endswith(".tmp")]
    except (FileNotFoundError, NotADirectoryError):
        names = []
    for name in names:
        match = _TEMPORARY.fullmatch(name)
        if match is None:
            continue
        tmp = folder / name
        try:
            os.kill(int(match.group(2)), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
        except PermissionError:
            pass  # a live process of another user
    return removed


TRIMMED = ".trimmed"  # in a trimmed folder: its modification time is when it was last looked at


def trim_least_recently_used(folder: Path, limit: int, every: float) -> list[Path]:
    """Keep the files under ``folder`` (a cache, whose files can all be made again) to ``limit``
    bytes: when they hold more, remove the least recently used (by access or modification time,
    whichever is later) until 80% of ``limit`` is left, so the next look finds room, then the folders
    that leaves empty. Looking walks the folder, so it happens at most once every ``every`` seconds
    (the mtime of ``TRIMMED`` in it). A process reading a file as it goes keeps reading it; one that
    then misses it makes it again. Symbolic links are never followed. Returns the files removed."""
    stamp = os.path.join(folder, TRIMMED)
    try:
        if time.time() - os.stat(stamp).st_mtime < every:
            return []
    except FileNotFoundError:
        if not folder.is_dir():
            return []
    except OSError:
        return []
    with contextlib.suppress(OSError):
        with open(stamp, "ab"):
            os.utime(stamp)
    files: list[tuple[float, int, str]] = []
    folders = [os.fspath(folder)]
    for here in folders:
        with contextlib.suppress(OSError), os.scandir(here) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    elif entry.is_file(follow_symlinks=False) and entry.path != stamp:
                        st = entry.stat(follow_symlinks=False)
                        files.append((max(st.st_atime, st.st_mtime), st.st_size, entry.path))
    held = sum(size for _, size, _ in files)
    if held <= limit:
        return []
    removed = []
    for _, size, path in sorted(files):
        if held <= 0.8 * limit:
            break
        try:
            os.unlink(path)
        except FileNotFoundError:  # another process trimmed it first
            pass
        except OSError:  # not ours to remove: still held
            continue
        else:
            removed.append(Path(path))
        held -= size
    for emptied in sorted({p.parent for p in removed} - {folder}, reverse=True):
        with contextlib.suppress(OSError):  # not empty: another process wrote into it meanwhile
            os.rmdir(emptied)
    return removed
