"""Key files: mode 0600 on creation, no overwrite without --force, refusal of readable files."""
from __future__ import annotations

import os
import stat

import pytest

from producer import keygen
from producer.keys import read_key, write_key
from shared.errors import KeyFileError
from shared.hashspec import key_id


def test_keygen_writes_32_bytes_mode_0600_and_prints_only_key_id(tmp_path, capsys):
    path = tmp_path / "owner.key"
    old = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        assert keygen.main(["--out", str(path)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_bytes()
    assert len(key) == 32
    out = capsys.readouterr()
    text = out.out + out.err
    assert key_id(key).hex() in text
    assert key.hex() not in text and key.hex()[:16] not in text


def test_keygen_refuses_to_overwrite_unless_forced(tmp_path, capsys):
    path = tmp_path / "k"
    assert keygen.main(["--out", str(path)]) == 0
    first = path.read_bytes()
    assert keygen.main(["--out", str(path)]) == 1
    assert "exists" in capsys.readouterr().err
    assert path.read_bytes() == first
    assert keygen.main(["--out", str(path), "--force"]) == 0
    assert path.read_bytes() != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o601])
def test_read_key_refuses_files_others_can_use(tmp_path, mode):
    path = tmp_path / "k"
    write_key(path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_key(path)


def test_read_key_refuses_short_and_missing_keys(tmp_path):
    short = tmp_path / "short"
    fd = os.open(short, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"x" * 15)
    os.close(fd)
    with pytest.raises(KeyFileError, match="15 bytes"):
        read_key(short)
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key(tmp_path / "nope")
    with pytest.raises(KeyFileError, match="at least 16"):
        write_key(tmp_path / "tiny", nbytes=8)


def test_read_key_round_trip(tmp_path):
    key = write_key(tmp_path / "k")
    assert read_key(tmp_path / "k") == key


def test_keys_longer_than_blake2b_allows_are_refused(tmp_path):
    with pytest.raises(KeyFileError, match="at most 64"):
        write_key(tmp_path / "huge", nbytes=65)
    assert write_key(tmp_path / "max", nbytes=64) == read_key(tmp_path / "max")
    long = tmp_path / "long"
    fd = os.open(long, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"x" * 65)
    os.close(fd)
    with pytest.raises(KeyFileError, match="65 bytes, more than"):
        read_key(long)
