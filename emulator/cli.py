"""``notnets-emu``: docker-compose-style verbs over a topology of hosts sharing CXL pools.

This module only parses arguments and maps errors to exit codes; each verb's work lives
in a module of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from emulator import __version__
from emulator.errors import UserError



@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="notnets-emu")
def cli() -> None:
    """Emulate hosts that share CXL memory pools, and run RPC over them.

    Typical session: `notnets-emu up examples/two-hosts.yaml`, then `status`, `exec`,
    and `down`. `run FILE` does all of that for the topology's `run:` steps.
    """


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["qemu", "sim"]), help="Override the topology's backend.")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True,
              help="QEMU accelerator; auto probes KVM with a short boot and falls back to TCG.")
@click.option("--dry-run", is_flag=True, help="Print each host's QEMU command line and start nothing.")
@click.option("--name", "-p", help="Name the run (default: the topology's name:), as compose's -p.")
def up(file: Path, backend: Optional[str], accel: str, dry_run: bool, name: Optional[str]) -> None:
    """Boot every host of FILE and return once all are ready."""
    from emulator.topology.model import load_topology

    topology = load_topology(file, backend=backend, name=name)
    if dry_run:
        from emulator.backends.qemu.dry_run import print_dry_run

        print_dry_run(topology, accel="kvm" if accel == "kvm" else "tcg")
        return
    from emulator import commands

    commands.up(topology, accel=accel)


@cli.command()
@click.option("--name", "-p", help="The run to stop (default: the only run that is up).")
@click.option("--keep-pools", is_flag=True, help="Keep the pools' backing files (and their huge pages).")
def down(name: Optional[str], keep_pools: bool) -> None:
    """Stop every host of a run and release its pools."""
    from emulator import commands

    commands.down(name, keep_pools=keep_pools)


@cli.command()
@click.option("--name", "-p", help="The run to show (default: the only run that is up).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(name: Optional[str], as_json: bool) -> None:
    """Show the hosts and pools of a run."""
    from emulator import commands

    commands.status(name, as_json=as_json)


@cli.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("--name", "-p", help="The run (default: the only run that is up).")
@click.option("--detach", "-d", is_flag=True, help="Start the command and return at once.")
@click.option("--env", "-e", "env", multiple=True, metavar="KEY[=VAL]",
              help="Set a variable for the command (repeatable); KEY alone takes the caller's value.")
@click.option("--workdir", "-w", metavar="DIR", help="Run in DIR (default: the caller's directory).")
@click.option("--interactive", "-i", is_flag=True, help="Forward this process's stdin to the command.")
@click.option("--no-tty", "-T", is_flag=True, hidden=True, help="Accepted for docker compose habits: no TTY is ever made.")
@click.option("--timeout", type=float, help="Seconds before the command is killed (exit code 124).")
@click.argument("host")
@click.argument("words", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(name: Optional[str], detach: bool, env: tuple[str, ...], workdir: Optional[str], interactive: bool,
          no_tty: bool, timeout: Optional[float], host: str, words: tuple[str, ...]) -> None:
    """Run a command on HOST, like `docker compose exec`: `exec host0 -- python -V`.

    The words are joined with spaces and run by the guest's shell in the caller's
    directory (or -w DIR), with the project's .venv first on PATH and NOTNETS_* set. The
    exit code passes through; stdin is /dev/null unless -i.
    """
    from emulator import commands
    from emulator.runs.guest_env import parse_env_options

    if words and words[0] == "--":  # click keeps the separator once HOST was taken
        words = words[1:]
    if not words:
        raise click.UsageError("no command given after HOST (use: exec HOST -- WORDS...)")
    if timeout is not None and timeout <= 0:
        raise click.BadParameter(f"{timeout:g}: must be more than 0 seconds", param_hint="--timeout")
    if detach and interactive:
        raise click.UsageError("-d and -i exclude each other (a detached command has no stdin)")
    extra = parse_env_options(env)
    sys.exit(commands.exec_(name, host, " ".join(words), detach=detach, timeout=timeout, extra_env=extra,
                            workdir=workdir, stdin=sys.stdin.buffer if interactive else None))


@cli.command()
@click.option("--name", "-p", help="The run (default: the only run that is up).")
@click.argument("host")
def console(name: Optional[str], host: str) -> None:
    """Attach to HOST's serial console (Ctrl-] to leave)."""
    from emulator import commands

    commands.console(name, host)


@cli.command()
@click.option("--name", "-p", help="The run (default: the only run that is up; a run that is down: its kept logs).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines while a host runs.")
@click.option("--tail", "-n", "tail", default="all", show_default=True, metavar="N|all",
              help="Only the last N lines of each log.")
@click.option("--no-log-prefix", is_flag=True, help="No 'HOST | ' prefix, even with several logs.")
@click.argument("hosts", nargs=-1)
def logs(name: Optional[str], follow: bool, tail: str, no_log_prefix: bool, hosts: tuple[str, ...]) -> None:
    """Print the logs of HOSTS (default: every host): console log and detached commands.

    With several logs each line starts with `HOST | ` (the console) or `HOST[PID] | `
    (an `exec -d` command)."""
    from emulator import commands

    if tail == "all":
        lines = None
    elif tail.isdigit():
        lines = int(tail)
    else:
        raise click.BadParameter(f"{tail!r}: expected a number of lines or 'all'", param_hint="--tail")
    commands.logs(name, hosts, follow=follow, tail=lines, prefix=False if no_log_prefix else None)


@cli.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ls_(as_json: bool) -> None:
    """List every run on this machine, whichever directory it was started from."""
    from emulator import commands

    commands.ls(as_json=as_json)


@cli.command()
@click.option("--name", "-p", help="The run (default: the only run that is up).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("hosts", nargs=-1)
def ps(name: Optional[str], as_json: bool, hosts: tuple[str, ...]) -> None:
    """List the commands started in HOSTS (default: every host), running or ended."""
    from emulator import commands

    commands.ps(name, hosts, as_json=as_json)


@cli.command()
@click.option("--name", "-p", help="The run (default: the only run that is up).")
@click.argument("source")
@click.argument("dest")
def cp(name: Optional[str], source: str, dest: str) -> None:
    """Copy files between this machine and a host: `cp HOST:PATH DEST`, `cp SRC HOST:PATH`.

    Directories are copied whole; a DEST that is an existing directory receives SOURCE
    inside it (as `docker compose cp`)."""
    from emulator import commands

    commands.cp(name, source, dest)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["qemu", "sim"]), help="Override the topology's backend.")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True)
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a JUnit XML report here: one case per step, plus every test of the JUnit files "
                   "steps leave in $NOTNETS_ARTIFACTS.")
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path),
              help="Copy each host's $NOTNETS_ARTIFACTS to DIR/HOST/ at the end.")
@click.option("--keep-up", is_flag=True, help="When a step failed, leave the run up to look at it (then `down`).")
@click.option("--name", "-p", help="Name the run (default: the topology's name:), as compose's -p.")
def run(file: Path, backend: Optional[str], accel: str, junit: Optional[Path], artifacts: Optional[Path],
        keep_up: bool, name: Optional[str]) -> None:
    """Bring FILE up, run its `run:` steps, bring it down; non-zero if a step failed."""
    from emulator.topology.model import load_topology

    topology = load_topology(file, backend=backend, name=name)
    from emulator import commands

    sys.exit(commands.run(topology, accel=accel, junit=junit, artifacts=artifacts, keep_up=keep_up))


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                               "help_option_names": []})  # --help goes to bench's own parser
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Benchmark NotNets against gRPC over the network, with plots."""
    from emulator import commands

    commands.bench(ctx.args)


@cli.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--no-probe", is_flag=True, help="Skip the short KVM boot probe.")
def doctor(file: Optional[Path], no_probe: bool) -> None:
    """Check every prerequisite and say how to fix what is missing.

    With FILE, also check that this machine has the memory the topology needs.
    """
    from emulator.doctor import run_doctor

    sys.exit(run_doctor(file, probe_kvm=not no_probe))


@cli.group()
def pool() -> None:
    """Create, inspect or damage a NotNets pool file (or DAX device)."""


@pool.command("create")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--size", default="64M", show_default=True, help="Size of a new file (K/M/G suffixes).")
@click.option("--overwrite", is_flag=True, help="Format even if PATH already holds a pool.")
@click.option("--coherence", type=click.Choice(["coherent", "software"]), default="coherent", show_default=True,
              help="software: every user writes back and invalidates (docs/coherence.md).")
@click.option("--hosts", type=int, help="Host partitions, for host ids 0..N-1 (default 8); more hosts, smaller rings.")
def pool_create(path: Path, size: str, overwrite: bool, coherence: str, hosts: Optional[int]) -> None:
    """Format PATH as an empty pool."""
    from emulator import commands

    commands.pool_create(path, size, overwrite=overwrite, coherence=coherence, hosts=hosts)


@pool.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def pool_inspect(path: Path, as_json: bool) -> None:
    """Show a pool's header, services, channels and counters (read-only)."""
    from emulator import commands

    commands.pool_inspect(path, as_json=as_json)


@pool.command("poison")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--offset", required=True, type=int, help="First byte to overwrite.")
@click.option("--length", default=8, show_default=True, type=int, help="How many bytes.")
@click.option("--value", default=0xFF, show_default=True, type=int, help="The byte written.")
def pool_poison(path: Path, offset: int, length: int, value: int) -> None:
    """Overwrite a byte range of a pool (fault injection)."""
    from emulator import commands

    commands.pool_poison(path, offset, length, value)


@cli.command()
@click.option("--name", "-p", help="The run (default: the only run that is up).")
@click.argument("host")
@click.argument("action", type=click.Choice(["kill", "freeze", "thaw", "restart"]))
def fault(name: Optional[str], host: str, action: str) -> None:
    """Inject a failure into HOST: kill it, freeze it, thaw it, or restart it (after a kill)."""
    from emulator import commands

    commands.fault(name, host, action)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit."""
    try:
        cli.main(args=argv, prog_name="notnets-emu", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("notnets-emu: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except UserError as err:
        click.echo(f"notnets-emu: error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("notnets-emu: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
