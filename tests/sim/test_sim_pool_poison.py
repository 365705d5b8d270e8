"""`pool poison`: the bytes land where asked, and a bad range is one line, not a partial write."""

from __future__ import annotations

import pytest

from emulator.cli import main
from emulator.errors import UserError
from emulator.pools.poison import poison


def test_poison_writes_exactly_the_range(tmp_path):
    pool = tmp_path / "pool"
    pool.write_bytes(bytes(3 * 65536))
    assert poison(pool, 65536 - 3, 6, 0xAB) == 6
    data = pool.read_bytes()
    assert data[65536 - 3:65536 + 3] == b"\xab" * 6
    assert data.count(0xAB) == 6


@pytest.mark.parametrize("offset,length,value,words", [
    (4096, 1, 0xFF, "past the end"),
    (-1, 1, 0xFF, "offset >= 0"),
    (0, 0, 0xFF, "length >= 1"),
    (0, 1, 256, "a byte is 0..255"),
])
def test_bad_ranges_are_refused_before_writing(tmp_path, offset, length, value, words):
    pool = tmp_path / "pool"
    pool.write_bytes(bytes(4096))
    with pytest.raises(UserError, match=words):
        poison(pool, offset, length, value)
    assert pool.read_bytes() == bytes(4096)


def test_cli_missing_file_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pool", "poison", str(tmp_path / "nope"), "--offset", "0"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "no such pool file" in err and "Traceback" not in err


def test_cli_poisons(tmp_path, capsys):
    pool = tmp_path / "pool"
    pool.write_bytes(bytes(8192))
    with pytest.raises(SystemExit) as exit_info:
        main(["pool", "poison", str(pool), "--offset", "8", "--length", "8", "--value", "1"])
        raise SystemExit(0)
    assert exit_info.value.code == 0
    assert pool.read_bytes()[8:16] == b"\x01" * 8
    assert "wrote 8 byte(s)" in capsys.readouterr().err
