"""The owner's secret key on disk: made once, readable by its owner alone, never printed.

A key file holds the raw key bytes and nothing else. Reading refuses a file that group or others
can read, because a key that leaked to another local user makes every published index invertible
by a dictionary attack.
"""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from shared.errors import KeyFileError
from shared.hashspec import MAX_KEY_BYTES, MIN_KEY_BYTES

KEY_BYTES = 32
KEY_MODE = 0o600


def write_key(path: str | Path, force: bool = False, nbytes: int = KEY_BYTES) -> bytes:
    """Create ``path`` with mode 0600 holding ``nbytes`` random bytes; refuse to overwrite unless ``force``."""
    if not MIN_KEY_BYTES <= nbytes <= MAX_KEY_BYTES:
        raise KeyFileError(f"a key needs at least {MIN_KEY_BYTES} and at most {MAX_KEY_BYTES} bytes "
                           f"(BLAKE2b's limit), asked for {nbytes}")
    path = Path(path)
    key = secrets.token_bytes(nbytes)
    if force and path.exists():
        path.unlink()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; pass --force to replace it (the old key space is lost)") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, KEY_MODE)  # the umask may have removed bits, never added: make it exact
        os.write(fd, key)
    finally:
        os.close(fd)
    return key


def read_key(path: str | Path) -> bytes:
    """The key in ``path``, after checking it is private to its owner and 16..64 bytes long."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist (make one with 'hashbridge keygen')") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others can use it; "
            f"run 'chmod 600 {path}'")
    key = path.read_bytes()
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(f"key file {path} holds {len(key)} bytes, fewer than {MIN_KEY_BYTES}")
    if len(key) > MAX_KEY_BYTES:
        raise KeyFileError(f"key file {path} holds {len(key)} bytes, more than BLAKE2b's {MAX_KEY_BYTES}")
    return key
