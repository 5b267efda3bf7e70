"""Writes that never leave a half-written file behind: a temporary file, then a rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Self


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's own 0600 would hide results


# Fault injection for the crash tests: "NAME:SECONDS" sleeps before the rename that would put a
# file called NAME in place, so a test can kill the process while that file is being written.
_PAUSE_BEFORE_RENAME = "PYROHVAE_TEST_PAUSE_BEFORE_RENAME"


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.
    A failed write leaves `path` as it was and no temporary file; its OSError names `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _MODE)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _maybe_pause(path)
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is not None and Path(e.filename) == path:
            raise
        raise OSError(e.errno, f"cannot write: {e.strerror or e}", str(path)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _maybe_pause(path: Path) -> None:
    name, _, seconds = os.environ.get(_PAUSE_BEFORE_RENAME, "").partition(":")
    if name and name == path.name:
        import time

        time.sleep(float(seconds))


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: Path, blob: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` if needed and prove it takes a file; OSError otherwise."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
        pass
    return path


class UserError(Exception):
    """A failure the user caused and can mend (a file, an option, a folder): the command line shows
    its message as one line, without a traceback. Each layer raises its own kind."""


class RequestError(UserError, ValueError):
    """What an analysis was asked cannot be had of this run or these data (a task they lack, a run of
    another kind, too few images). A ValueError too, for callers of the library."""


class OptionError(RequestError):
    """The options given do not fit the run: the command line exits 2, as for its usage errors."""

    exit_code = 2


class FolderInUse(UserError):
    """Another process holds the folder."""


class FolderLock:
    """One process per run folder: an exclusive `flock` on `FOLDER/.lock`, which holds the PID of
    its holder. The OS drops the lock when its holder ends, however it ends (kill -9 included),
    so a lock left behind never blocks."""

    NAME = ".lock"

    def __init__(self, folder: Path):
        import fcntl

        self.fd = os.open(Path(folder) / self.NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise FolderInUse(
                f"{folder} is in use by process {holder}; wait for it to end or stop it"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def pyplot():
    """matplotlib.pyplot on a backend that needs no display: every figure goes to a file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 100, **options) -> None:
    """`fig` as a PNG at `path`, written whole or not at all (`atomic_path`), then closed."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, **options)
    pyplot().close(fig)
