"""Run inside a guest by the e2e tests: write or read bytes at an offset of a DAX device.

    python dax_marker.py write DEVICE OFFSET TEXT
    python dax_marker.py read DEVICE OFFSET LENGTH

A device-dax mapping must be a multiple of its alignment (2 MiB here), so the first
2 MiB are mapped; OFFSET + length must stay inside them.
"""

import mmap
import os
import sys

WINDOW = 2 << 20


def main(argv: list[str]) -> None:
    action, device, offset = argv[1], argv[2], int(argv[3])
    fd = os.open(device, os.O_RDWR)
    try:
        view = mmap.mmap(fd, WINDOW, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    if action == "write":
        data = argv[4].encode()
        view[offset:offset + len(data)] = data
        print(f"wrote {len(data)} bytes at {offset}")
    else:
        sys.stdout.write(view[offset:offset + int(argv[4])].decode(errors="replace") + "\n")
    view.close()


if __name__ == "__main__":
    main(sys.argv)
