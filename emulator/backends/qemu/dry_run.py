"""``up --dry-run``: print each host's QEMU command line exactly as ``up`` would run it."""

from __future__ import annotations

import shlex

import click

from emulator.backends.qemu.command import HostPaths, build_qemu_argv, load_template
from emulator.paths import find_kernel, state_root
from emulator.pools.backing import backing_path
from emulator.topology.model import Topology


def print_dry_run(topology: Topology, accel: str) -> None:
    """One ``# host`` header and one shell-quoted command per host; starts nothing."""
    if topology.backend != "qemu":
        click.echo(f"# backend {topology.backend}: no QEMU command lines")
        for host in topology.hosts:
            click.echo(f"# {host.name}: process tree, pools {', '.join(host.pools) or '-'}")
        return
    from emulator.image.kernel_image import boot_image  # what `up` boots: the PVH vmlinux if possible

    kernel = str(boot_image(find_kernel()))  # no kernel: the error `up` would give, and exit 1
    try:
        from emulator.image.initramfs import initramfs_path  # built by the guest image builder

        initrd = str(initramfs_path())
    except Exception:  # noqa: BLE001 - the initramfs is built at `up`; show where it goes
        initrd = "<initramfs: built at up>"
    state = state_root() / topology.name
    backing = {pool.name: str(backing_path(topology.name, pool)) for pool in topology.pools}
    template = load_template()
    for host in topology.hosts:
        paths = HostPaths.in_state_dir(
            state, host.name, kernel, initrd, backing, host.pools,
            agent_ports=int(template["agent_ports"]), network=topology.network,
        )
        argv = build_qemu_argv(topology, host, paths, accel=accel, template=template)
        click.echo(f"# {host.name} (host id {host.index}, pools: {', '.join(host.pools) or '-'})")
        click.echo(" \\\n    ".join(_pairs(argv)))
        click.echo()


def _pairs(argv: list[str]) -> list[str]:
    """Group ``-opt value`` pairs on one line each, so the output is readable."""
    lines: list[str] = [shlex.quote(argv[0])]
    i = 1
    while i < len(argv):
        word = argv[i]
        if word.startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            lines.append(f"{shlex.quote(word)} {shlex.quote(argv[i + 1])}")
            i += 2
        else:
            lines.append(shlex.quote(word))
            i += 1
    return lines
