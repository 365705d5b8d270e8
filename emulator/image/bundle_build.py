"""Run by the guest's Python (stdlib only): write a zip of the guest agent and every
pure-Python module it imports, compiled for that Python, runnable as ``python ZIP``.

    PYTHON -S -I -B bundle_build.py OUT.zip PROJECT

Entries are ``name.pyc`` (packages ``name/__init__.pyc``) with a fixed date, so equal
inputs give equal bytes; extension modules (.so) stay out and load from the disk. The
module list comes from a fresh interpreter (``--list``) that imports what running a
zip (runpy) and the agent import, and nothing of this builder's own.
"""

import subprocess
import sys

MAIN = "import sys\nfrom guest.agent import main\nsys.exit(main(sys.argv))\n"
DATE = (1980, 1, 1, 0, 0, 0)


def list_modules(project: str) -> int:
    """--list: print "name<TAB>file" for each module the agent needs, from this clean interpreter."""
    import runpy  # noqa: F401 - `python ZIP` runs the zip's __main__ through runpy

    sys.path.insert(0, project)
    import guest.agent  # noqa: F401 - its import closure is the bundle

    for name, module in sorted(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        frozen = getattr(getattr(module, "__spec__", None), "origin", None) == "frozen"  # in the binary already
        if path.endswith(".py") and name != "__main__" and not frozen:
            print(f"{name}\t{path}")
    return 0


def _pyc(code) -> bytes:
    import importlib.util
    import marshal

    # flags 0b01: an unchecked hash-based pyc (PEP 552), never compared with a source
    return importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little") + bytes(8) + marshal.dumps(code)


def build(out: str, project: str) -> int:
    import zipfile

    listing = subprocess.run([sys.executable, "-S", "-I", "-B", __file__, "--list", project],
                             capture_output=True, text=True, check=True).stdout
    entries = {}
    for line in listing.splitlines():
        name, path = line.split("\t", 1)
        with open(path, "rb") as f:
            code = compile(f.read(), path, "exec", dont_inherit=True)
        arc = name.replace(".", "/") + ("/__init__.pyc" if path.endswith("__init__.py") else ".pyc")
        entries[arc] = _pyc(code)
    entries["__main__.pyc"] = _pyc(compile(MAIN, "__main__.py", "exec", dont_inherit=True))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for arc in sorted(entries):
            zf.writestr(zipfile.ZipInfo(arc, DATE), entries[arc])
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--list"]:
        sys.exit(list_modules(sys.argv[2]))
    sys.exit(build(sys.argv[1], sys.argv[2]))
