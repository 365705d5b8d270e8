"""Reading newc archives back, for the tests of emulator/image/cpio.py and emulator/image/initramfs.py."""


def parse(data: bytes):
    """A minimal newc reader: [(name, mode, rdevmajor, rdevminor, body)]."""
    out, pos = [], 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body_start = name_start + namesize + (-(110 + namesize) % 4)
        body = data[body_start:body_start + filesize]
        pos = body_start + filesize + (-filesize % 4)
        if name == "TRAILER!!!":
            return out
        out.append((name, fields[1], fields[9], fields[10], body))
