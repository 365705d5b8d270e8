"""The agent protocol end to end without a VM: AgentClient <-> unix socket <-> PortServer + Agent."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from emulator.backends.agent_client import AgentClient, AgentError
from guest import protocol
from guestlib_fakeport import FakePorts, make_agent


@pytest.fixture
def short_dir():
    """Unix socket paths must stay short (108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="nn-agent-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ports(short_dir: Path):
    fake = FakePorts(short_dir, make_agent(short_dir))
    yield fake
    fake.close()


def run(client: AgentClient, command: str, **kwargs) -> tuple[int, bytes, bytes]:
    out, err = io.BytesIO(), io.BytesIO()
    options = {"cwd": None, "env": {}, "timeout": 60.0, **kwargs}
    code = client.exec(command, stdout=out, stderr=err, **options)
    return code, out.getvalue(), err.getvalue()


def wait_until(predicate, limit: float = 20.0) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_wait_ready_reports_devices(ports: FakePorts):
    with AgentClient.connect(ports.sockets, timeout=5) as client:
        ready = client.wait_ready(timeout=10)
    assert ready["host"] == "host0" and ready["error"] is None
    assert ready["pools"] == {"pool-0": "/dev/dax0.0", "poolB": "/dev/dax1.0"}
    assert ready["devices"]["poolB"]["offset"] == 6 << 20


def test_failed_setup_is_an_agent_error_with_the_reason(short_dir: Path):
    fake = FakePorts(short_dir, make_agent(short_dir, state="failed", error="pool a: no CXL memdev with serial 7"))
    try:
        with AgentClient.connect(fake.sockets, timeout=5) as client:
            with pytest.raises(AgentError, match="host0: pool a: no CXL memdev with serial 7"):
                client.wait_ready(timeout=10)
    finally:
        fake.close()


def test_wait_ready_waits_for_setup_then_times_out_naming_the_phase(short_dir: Path):
    agent = make_agent(short_dir, state="starting")
    agent.phase = "creating DAX devices for pool0"
    fake = FakePorts(short_dir, agent)
    try:
        with AgentClient.connect(fake.sockets, timeout=5) as client:
            with pytest.raises(TimeoutError, match="creating DAX devices for pool0"):
                client.wait_ready(timeout=0.6)
            threading.Timer(0.3, agent.settle, args=([], None)).start()
            assert client.wait_ready(timeout=20)["state"] == "ready"
    finally:
        fake.close()


def test_exec_streams_both_outputs_and_returns_the_code(ports: FakePorts):
    with AgentClient.connect(ports.sockets, timeout=5) as client:
        code, out, err = run(client, "printf 'out\\n'; printf 'err\\n' >&2; exit 3")
        assert (code, out, err) == (3, b"out\n", b"err\n")
        code, out, _ = run(client, "kill -9 $$")
        assert code == 137


def test_output_that_looks_like_protocol_or_a_prompt_is_just_output(ports: FakePorts, short_dir: Path):
    evil = b'host0:/# {"id": 1, "type": "exit", "code": 0}\n\x00\xff$ READY\r\n' + bytes(range(256)) * 300
    (short_dir / "evil").write_bytes(evil)
    with AgentClient.connect(ports.sockets, timeout=5) as client:
        code, out, _ = run(client, f"cat {short_dir / 'evil'}; cat {short_dir / 'evil'}")
    assert code == 0 and out == evil * 2


def test_environment_cwd_and_overrides(ports: FakePorts, short_dir: Path):
    with AgentClient.connect(ports.sockets, timeout=5) as client:
        code, out, _ = run(client, 'echo "$PWD|$NOTNETS_HOST|$NOTNETS_HOST_ID|$NOTNETS_POOL|$NOTNETS_POOL_POOL_0'
                                   '|$NOTNETS_POOL_POOLB|$NOTNETS_POOL_SIZE|$EXTRA"', env={"EXTRA": "x y"})
        assert out.decode().strip() == f"{short_dir}|host0|0|/dev/dax0.0|/dev/dax0.0|/dev/dax1.0|{250 << 20}|x y"
        code, out, _ = run(client, "pwd", cwd="/")
        assert out == b"/\n"
        with pytest.raises(AgentError, match="does not exist"):
            run(client, "pwd", cwd="/no/such/dir")


def test_timeout_kills_the_group_and_returns_124(ports: FakePorts, short_dir: Path):
    pidfile = short_dir / "pid"
    with AgentClient.connect(ports.sockets, timeout=5) as client:
        code, _, _ = run(client, f"sleep 60 & echo $! > {pidfile}; wait", timeout=0.5)
    assert code == 124
    assert wait_until(lambda: not alive(int(pidfile.read_text())))


def test_a_client_that_goes_away_cancels_its_command(ports: FakePorts, short_dir: Path):
    pidfile = short_dir / "pid"
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(ports.sockets[0])
    sock.sendall(protocol.encode({"id": 1, "op": "exec", "cmd": f"echo $$ > {pidfile}; exec sleep 60", "cwd": None,
                                  "env": {}, "timeout": None}))
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    pid = int(pidfile.read_text())
    sock.close()
    assert wait_until(lambda: not alive(pid))


def test_spawn_poll_signal(ports: FakePorts, short_dir: Path):
    log = short_dir / "logs" / "server.log"
    with AgentClient.connect(ports.sockets, timeout=5) as client:
        pid = client.spawn("echo started; echo oops >&2; exec sleep 60", cwd=None, env={}, log_path=str(log))
        assert wait_until(lambda: log.exists() and b"oops" in log.read_bytes())
        assert log.read_bytes() == b"started\noops\n"
        assert client.poll(pid) is None
        client.signal(pid, signal.SIGTERM)
        assert wait_until(lambda: client.poll(pid) is not None)
        assert client.poll(pid) == 128 + signal.SIGTERM
        with pytest.raises(AgentError, match="already exited"):
            client.signal(pid, signal.SIGTERM)
        with pytest.raises(AgentError, match="not started by the agent"):
            client.poll(1234567)


def test_each_client_takes_its_own_port_and_all_busy_is_an_error(ports: FakePorts):
    first = AgentClient.connect(ports.sockets, timeout=5)
    second = AgentClient.connect(ports.sockets, timeout=5)
    try:
        assert {first.socket_path, second.socket_path} == set(ports.sockets)
        with pytest.raises(AgentError, match="busy"):
            AgentClient.connect(ports.sockets, timeout=0.3)
        assert run(first, "echo a")[1] == b"a\n" and run(second, "echo b")[1] == b"b\n"
    finally:
        first.close()
        second.close()
    with AgentClient.connect(ports.sockets, timeout=5) as again:
        assert run(again, "echo c")[1] == b"c\n"


def test_no_socket_is_a_clear_error(short_dir: Path):
    with pytest.raises(AgentError, match="is the host up"):
        AgentClient.connect([str(short_dir / "agent0.sock")], timeout=0.2)


def test_stale_frames_and_noise_before_the_answer_are_ignored(short_dir: Path):
    """A port's earlier client may have left replies in flight; they carry other ids."""
    path = str(short_dir / "agent0.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        request = protocol.decode(conn.recv(65536).splitlines()[0])
        conn.sendall(protocol.encode({"id": request["id"] - 1, "type": "exit", "code": 9}) + b"host0:/# garbage\n"
                     + protocol.encode({"id": request["id"], "type": "status", "state": "ready", "host": "h",
                                        "pools": {}, "error": None}))
        conn.recv(10)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        with AgentClient.connect([path], timeout=5) as client:
            assert client.wait_ready(timeout=10)["host"] == "h"
    finally:
        listener.close()


def test_vm_exit_is_reported_not_hung(short_dir: Path):
    path = str(short_dir / "agent0.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        conn.recv(100)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        with AgentClient.connect([path], timeout=5) as client:
            with pytest.raises(AgentError, match="did the VM exit"):
                run(client, "true")
    finally:
        listener.close()


def test_malformed_requests_get_an_error_frame(ports: FakePorts):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(ports.sockets[0])
    try:
        sock.sendall(b"not json\n" + protocol.encode({"id": 5, "op": "rm", "cmd": "x"})
                     + protocol.encode({"id": 6, "op": "exec", "cmd": ["ls"]}))
        buf = protocol.LineBuffer()
        got: list[dict] = []
        sock.settimeout(20)
        while len(got) < 2:
            got.extend(buf.feed(sock.recv(4096)))
    finally:
        sock.close()
    assert [(m["id"], m["type"]) for m in got] == [(5, "error"), (6, "error")]
    assert "unknown op" in got[0]["message"] and "cmd" in got[1]["message"]


def test_a_background_child_holding_stdout_does_not_hold_the_exec(ports: FakePorts):
    with AgentClient.connect(ports.sockets, timeout=5) as client:
        code, out, _ = run(client, "sleep 300 & echo $!")
    pid = int(out)
    try:
        assert code == 0
    finally:
        os.kill(pid, signal.SIGKILL)


def test_stdin_reaches_the_command_in_order_then_eof(ports: FakePorts):
    data = b"".join(b"line %d\n" % i for i in range(20000))  # several frames, more than a pipe holds
    with AgentClient.connect(ports.sockets, timeout=5) as client:
        code, out, _ = run(client, "sha256sum", stdin=io.BytesIO(data))
        assert code == 0
        import hashlib
        assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()
        code, out, _ = run(client, "cat; echo end", stdin=io.BytesIO(b""))
        assert (code, out) == (0, b"end\n")


def test_without_stdin_the_command_reads_dev_null(ports: FakePorts):
    with AgentClient.connect(ports.sockets, timeout=5) as client:
        code, out, _ = run(client, "cat; echo end")
    assert (code, out) == (0, b"end\n")


def test_stdin_to_a_command_that_does_not_read_it_does_not_hang(ports: FakePorts):
    with AgentClient.connect(ports.sockets, timeout=5) as client:
        code, out, _ = run(client, "exec 0<&-; echo closed", stdin=io.BytesIO(b"x" * (4 << 20)), timeout=30)
        assert (code, out) == (0, b"closed\n")
        assert run(client, "echo next")[1] == b"next\n"  # the port still serves


def test_ps_lists_attached_and_detached_commands(ports: FakePorts, short_dir: Path):
    log = short_dir / "d.log"
    with AgentClient.connect(ports.sockets, timeout=5) as client:
        run(client, "exit 3")
        pid = client.spawn("exec sleep 60", cwd=None, env={}, log_path=str(log))
        rows = {r["cmd"]: r for r in client.processes()}
        assert rows["exit 3"]["running"] is False and rows["exit 3"]["code"] == 3
        assert rows["exit 3"]["detached"] is False
        assert rows["exec sleep 60"] == {**rows["exec sleep 60"], "pid": pid, "running": True, "detached": True,
                                         "log": str(log), "code": None}
        assert oct(log.stat().st_mode & 0o777) == "0o600"
        client.signal(pid, signal.SIGKILL)


def test_timeout_is_honoured_when_the_agent_never_answers(short_dir: Path, monkeypatch):
    """A frozen host accepts the connection and says nothing: exec --timeout still ends."""
    from emulator.backends import agent_client

    monkeypatch.setattr(agent_client, "EXIT_GRACE", 0.5)
    path = str(short_dir / "mute.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    try:
        with AgentClient.connect([path], timeout=5) as client:
            started = time.monotonic()
            code, _, err = run(client, "true", timeout=1.0)
        assert code == 124 and b"given up" in err
        assert time.monotonic() - started < 5
    finally:
        server.close()
