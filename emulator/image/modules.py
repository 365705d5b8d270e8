"""Which kernel module files the guest needs, in the order insmod must load them.

Resolved from the kernel's own modules.dep (as `modprobe --show-depends` would) so the
initramfs carries exactly what is loaded, and nothing depends on kmod inside the guest.
"""

from __future__ import annotations

from pathlib import Path

from emulator.errors import UserError

WANTED_LIST = Path(__file__).resolve().parent / "modules.txt"


def canonical(name: str) -> str:
    """Module names treat '-' and '_' alike (virtio-rng.ko is module virtio_rng)."""
    return name.replace("-", "_")


def module_name(path: str) -> str:
    """``kernel/drivers/char/hw_random/virtio-rng.ko`` -> ``virtio_rng``."""
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return canonical(base)


def read_wanted(path: Path = WANTED_LIST) -> dict[str, list[str]]:
    """Module names by stage ("[boot]", "[late]" headers) from the list file."""
    stages: dict[str, list[str]] = {}
    stage = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        word = line.split("#", 1)[0].strip()
        if not word:
            continue
        if word.startswith("[") and word.endswith("]"):
            stage = word[1:-1]
            stages.setdefault(stage, [])
        elif stage is None:
            raise UserError(f"{path}:{number}: module {word!r} before any [stage] header")
        else:
            stages[stage].append(canonical(word))
    return stages


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """modules.dep as {name: (path, [dependency paths])}."""
    table: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, _, deps = line.partition(":")
        path = path.strip()
        table[module_name(path)] = (path, deps.split())
    return table


def parse_builtin(text: str) -> set[str]:
    """Names of modules compiled into the kernel (modules.builtin)."""
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


def load_order(wanted: list[str], dep_table: dict[str, tuple[str, list[str]]], builtin: set[str],
               loaded: set[str] | None = None) -> list[str]:
    """Module file paths (relative to lib/modules/VER) in a valid insmod order.

    Depth-first: each module's dependencies come before it, each file once, and the
    wanted modules keep their listed order otherwise. Paths in ``loaded`` (an earlier
    stage) are left out.
    """
    by_path = {path: deps for path, deps in dep_table.values()}
    order: list[str] = []
    seen: set[str] = set(loaded or ())

    def visit(path: str, chain: tuple[str, ...]) -> None:
        if path in seen:
            return
        if path in chain:
            raise UserError(f"modules.dep has a dependency cycle: {' -> '.join(chain + (path,))}")
        for dep in by_path.get(path, []):
            if dep not in by_path:
                raise UserError(f"modules.dep: {path} needs {dep}, which it does not list")
            visit(dep, chain + (path,))
        seen.add(path)
        order.append(path)

    for name in wanted:
        name = canonical(name)
        if name in dep_table:
            visit(dep_table[name][0], ())
        elif name not in builtin:
            raise UserError(f"the guest kernel has no module {name!r} (neither in modules.dep nor built in)")
    return order


def resolve(modules_dir: Path, wanted: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Per stage, the insmod order for the kernel whose modules live in ``modules_dir``.

    A module needed by an earlier stage is loaded there only.
    """
    dep_file = modules_dir / "modules.dep"
    try:
        dep_text = dep_file.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read {dep_file}: {err.strerror}; run `make setup`") from None
    builtin_file = modules_dir / "modules.builtin"
    builtin_text = builtin_file.read_text(encoding="utf-8") if builtin_file.exists() else ""
    stages = read_wanted(WANTED_LIST) if wanted is None else wanted
    table, builtin = parse_modules_dep(dep_text), parse_builtin(builtin_text)
    result: dict[str, list[str]] = {}
    loaded: set[str] = set()
    for stage, names in stages.items():
        result[stage] = load_order(names, table, builtin, loaded)
        loaded.update(result[stage])
    return result
