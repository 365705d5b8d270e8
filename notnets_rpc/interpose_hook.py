"""Import hook for interposition; stdlib only, executed by the notnets-interpose.pth line
when $NOTNETS_INTERPOSE is set (``notnets_rpc.interpose.install_hook`` writes that line).

It must not import grpc or notnets_rpc itself (that would cost every Python start the
~2 s grpc takes to import in an emulated host): it waits on ``sys.meta_path`` for the
program's own ``import grpc`` and patches grpc when that import has run.
"""

import importlib.abc
import importlib.util
import sys


class _PatchAfterLoad(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            from notnets_rpc.interpose import patch
            patch(module)
        except Exception as exc:  # grpc keeps working over TCP
            sys.stderr.write(f"notnets: interposition unavailable ({type(exc).__name__}: {exc}); using TCP\n")


class GrpcFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "grpc":
            return None
        sys.meta_path.remove(self)  # one grpc per process: look for the real one, once
        spec = importlib.util.find_spec("grpc")
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _PatchAfterLoad(spec.loader)
        return spec


if "grpc" in sys.modules:
    try:
        from notnets_rpc.interpose import patch
        patch(sys.modules["grpc"])
    except Exception as exc:
        sys.stderr.write(f"notnets: interposition unavailable ({type(exc).__name__}: {exc}); using TCP\n")
elif not any(isinstance(f, GrpcFinder) or type(f).__name__ == "GrpcFinder" for f in sys.meta_path):
    sys.meta_path.insert(0, GrpcFinder())
