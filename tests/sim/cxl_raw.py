"""A raw program on a host (no notnets_rpc protocol): one step on 5 bytes at 48 MiB of
$NOTNETS_POOL through notnets_rpc.cxl, then print the mapping's kind and those bytes.

    python cxl_raw.py write     # store b"hello" (no write-back)
    python cxl_raw.py flush     # write the line back
    python cxl_raw.py peek      # just read (this host's copy)
    python cxl_raw.py read      # invalidate, then read
"""

from __future__ import annotations

import os
import sys

from notnets_rpc import cxl

AT = 48 << 20


def main(step: str) -> int:
    with cxl.map_pool(os.environ["NOTNETS_POOL"]) as m:
        if step == "write":
            m[AT : AT + 5] = b"hello"
        elif step == "flush":
            m.flush(AT, 5)
        elif step == "read":
            m.invalidate(AT, 5)
        elif step != "peek":
            print(__doc__, file=sys.stderr)
            return 2
        print(m.kind, bytes(m[AT : AT + 5]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) == 2 else ""))
