"""Writes that never leave a half-written file behind: a temporary file, then a rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
