"""Safe output directories: every directory uniret writes goes through here.

The rules (README, "What uniret guarantees"):

- **Only uniret's own directories are replaced.** An existing destination may be replaced only when it is a
  directory uniret wrote: it holds the marker file ``.uniret.json`` (written into every directory completed
  here) or an index ``manifest.json`` naming a ``uniret_version``. A plain file, a directory of the user's own
  files, the current directory or a data set is never touched: :class:`OutputPathError` names the path.
- **Inputs are protected.** An output equal to, inside or above an input directory (``protect=``) is an error.
- **Atomic replacement.** The new directory is written under a temporary name beside the destination and swapped
  in with one ``renameat2(RENAME_EXCHANGE)``, so a reader sees the old directory or the new one, never a missing
  path (where the file system cannot exchange, two renames follow each other immediately).
- **One writer at a time.** A lock file ``.<name>.lock`` beside the destination is held (``flock``) while a
  directory is written; a second process gets :class:`OutputLockedError` at once. The lock is re-entrant within
  a process, so a command can lock its output early and the backend's ``save`` can take it again.
- **No leftovers.** Temporary (``.<name>.tmp-*``) directories of a killed writer are removed by the next writer
  of the same destination, which holds the lock and so knows nobody else uses them; the lock file is removed
  when released.
- **The user's umask applies.** Temporary directories are created 0700; a completed directory gets the mode a
  plain ``mkdir`` would have given it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from uniret.errors import UniretError

logger = logging.getLogger(__name__)

MARKER = ".uniret.json"
_RENAME_EXCHANGE = 2


class OutputPathError(UniretError, ValueError):
    """An output path that uniret must not write: a user's file or directory, or a data set."""


class OutputLockedError(UniretError, RuntimeError):
    """Another process is writing the same output path."""


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def is_uniret_directory(path: str | Path) -> bool:
    """True when ``path`` is a directory uniret wrote (its marker, or an index manifest naming uniret)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / MARKER).is_file():
        return True
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and "uniret_version" in data and "kind" in data
    return False


def write_marker(directory: str | Path, kind: str, **extra: Any) -> None:
    from uniret import __version__

    record = {"kind": kind, "uniret_version": __version__,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
    (Path(directory) / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _related(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_output(destination: str | Path, *, protect: Sequence[str | Path] = (), what: str = "output") -> Path:
    """Validate an output path before any work: it must not be, contain or lie inside a protected input, and
    an existing path must be absent, an empty directory or a directory uniret wrote. Returns it resolved."""
    dest = Path(destination).expanduser().resolve()
    for p in protect:
        if p is None:
            continue
        src = Path(p).expanduser().resolve()
        if _related(dest, src):
            raise OutputPathError(f"{what} {destination} is the same as, inside or above the input {p}; "
                                  "choose another path")
    if dest == Path.cwd().resolve() or dest == Path(dest.anchor) or dest == Path.home().resolve():
        raise OutputPathError(f"{what} {destination} is the current, root or home directory; choose a new path")
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir() or dest.is_symlink():
            raise OutputPathError(f"{what} {destination} exists and is not a directory uniret wrote; "
                                  "nothing was changed (remove it or choose another path)")
        if any(dest.iterdir()) and not is_uniret_directory(dest):
            raise OutputPathError(f"{what} {destination} exists and holds files uniret did not write; nothing "
                                  "was changed (remove it or choose another path)")
    return dest


def check_output_file(path: str | Path, *, protect: Sequence[str | Path] = (), owned_if: str | None = None,
                      what: str = "output") -> Path:
    """Validate an output *file* before any work: not inside a protected input, not a directory, and an
    existing file only when uniret wrote it (``owned_if``: a sibling suffix uniret writes with it, such as
    ``.stats.json``). Returns it resolved."""
    dest = Path(path).expanduser().resolve()
    for p in protect:
        src = Path(p).expanduser().resolve()
        if _related(dest, src):
            raise OutputPathError(f"{what} {path} is inside or above the input {p}; choose another path")
    if dest.is_dir():
        raise OutputPathError(f"{what} {path} is a directory; give a file name")
    if dest.exists() and not (owned_if and dest.with_name(dest.name + owned_if).is_file()):
        raise OutputPathError(f"{what} {path} exists and is not a file uniret wrote; nothing was changed (remove "
                              "it or choose another path)")
    return dest


# -- locks --------------------------------------------------------------------------------------------------

_LOCK = threading.Lock()
_HELD: dict[Path, list[Any]] = {}  # destination -> [fd, depth]


def _lock_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.lock")


@contextlib.contextmanager
def output_lock(destination: str | Path) -> Iterator[Path]:
    """Hold the writer's lock of ``destination`` (re-entrant within this process); raise
    :class:`OutputLockedError` at once when another process holds it."""
    dest = Path(destination).expanduser().resolve()
    with _LOCK:
        held = _HELD.get(dest)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield dest
        finally:
            with _LOCK:
                held[1] -= 1
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_path(dest)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                owner = ""
                with contextlib.suppress(OSError):
                    owner = lock.read_text(encoding="utf-8").strip()
                raise OutputLockedError(f"{destination} is locked: another process ({owner or 'unknown'}) is "
                                        f"writing it (lock file {lock}); wait for it or choose another path") from None
            raise
        try:  # the file we locked may have been unlinked by its previous holder: lock the current one
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}".encode())
    with _LOCK:
        _HELD[dest] = [fd, 1]
    try:
        _remove_stale(dest)
        yield dest
    finally:
        with _LOCK:
            _HELD.pop(dest, None)
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _remove_stale(dest: Path) -> None:
    """Temporary directories of an earlier writer of ``dest`` (killed, since we hold the lock)."""
    if not dest.parent.is_dir():
        return
    prefixes = (f".{dest.name}.tmp-", f".{dest.name}.old-")
    for p in dest.parent.iterdir():
        if p.name.startswith(prefixes):
            logger.info("removing %s left by an interrupted writer", p)
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def scratch_directory(destination: str | Path, tag: str = "scratch") -> Path:
    """A fresh temporary directory beside ``destination`` for intermediate files; remove it when done (an
    interrupted one is removed by the next writer of ``destination``)."""
    dest = Path(destination).expanduser().resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{tag}-", dir=dest.parent))


# -- atomic replacement -------------------------------------------------------------------------------------

def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False when the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            return False
        raise OSError(err, os.strerror(err), str(b))
    return True


def apply_umask(root: Path) -> None:
    """Give ``root`` and everything under it the modes a plain mkdir/open would have under the user's umask
    (a ``tempfile.mkdtemp`` directory is private until then)."""
    dir_mode = 0o777 & ~_umask()
    file_mode = 0o666 & ~_umask()
    for current, dirs, files in os.walk(root):
        os.chmod(current, dir_mode)
        for name in files:
            p = Path(current) / name
            if not p.is_symlink():
                os.chmod(p, (os.stat(p).st_mode & 0o111 & dir_mode) | file_mode)
        del dirs  # walked by os.walk


def replace_directory(tmp: Path, dest: Path) -> Path:
    """Put the finished directory ``tmp`` at ``dest`` in one step: a rename when ``dest`` is absent, else an
    atomic exchange (or, where the system cannot exchange, two renames). Returns the path that now holds what
    was at ``dest`` (``tmp`` itself after an exchange), for the caller to remove."""
    if not dest.exists():
        try:
            os.rename(tmp, dest)
            return tmp
        except OSError as e:  # another writer put a directory there first: exchange with it
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    if not _exchange(tmp, dest):
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{time.time_ns()}")
        os.rename(dest, old)
        os.rename(tmp, dest)
        return old
    return tmp


@contextlib.contextmanager
def atomic_directory(destination: str | Path, *, kind: str = "output",
                     protect: Sequence[str | Path] = ()) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``destination`` atomically.

    ``destination`` is checked first (:func:`check_output`), its lock is held throughout, and the completed
    directory gets the marker ``.uniret.json`` (``kind``) and the user's umask. On an exception the temporary
    directory is removed and ``destination`` is left as it was."""
    dest = check_output(destination, protect=protect)
    with output_lock(dest):
        dest = check_output(destination, protect=protect)  # again, now that nobody else writes it
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            yield tmp
            if not (tmp / MARKER).exists():
                write_marker(tmp, kind)
            apply_umask(tmp)
            tmp = replace_directory(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def output_directory(destination: str | Path, *, kind: str, protect: Sequence[str | Path] = ()) -> Iterator[Path]:
    """A directory written in place (training runs, reports): checked, locked, created with the user's umask
    and marked as uniret's; files inside are written by the caller (each atomically where it matters)."""
    dest = check_output(destination, protect=protect)
    with output_lock(dest):
        dest.mkdir(parents=True, exist_ok=True)
        if not (dest / MARKER).exists():
            write_marker(dest, kind)
        yield dest


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a file through a temporary file and a rename (readers never see half of it)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
