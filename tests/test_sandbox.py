"""The sandbox for model-written code: hostile programs are contained and reported as failures.

Every hostile program runs in three configurations: all layers (what tasks use), the Python
guard without kernel namespaces or a uid change (the weakest machine), and the kernel layers
without the guard (skipped for the harms no kernel layer covers on this machine).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from lmeval_layerprune.probes import sandbox
from lmeval_layerprune.probes.sandbox import Limits, isolation, run_program, run_programs

FAST = Limits(timeout=3, cpu_seconds=2, memory_mb=512, file_size_mb=1)
ISO = isolation()

CONFIGS = {
    "all-layers": {},
    "guard-only": {"namespaces": False, "drop_uid": False},
    "kernel-only": {"guard": False},
}
KERNEL_COVERS = {
    "network": ISO["netns"],
    "signals": ISO["pidns"] or ISO["uid"] != os.geteuid(),
    "processes": ISO["uid"] != 0,  # root ignores RLIMIT_NPROC
    "files": ISO["uid"] == 65534,
}


def layers(config: str, harm: str) -> dict:
    if config == "kernel-only" and not KERNEL_COVERS[harm]:
        pytest.skip(f"no kernel layer stops {harm} on this machine ({ISO})")
    return CONFIGS[config]


def _sandbox_processes() -> list[int]:
    """PIDs of sandbox bootstraps left behind: alive although their run is over, which ``run_program``
    ends by removing the run's working folder. Sandboxes still running (other tests on other pytest-xdist
    workers) keep theirs and are not counted."""
    marker = sandbox._BOOTSTRAP.strip().splitlines()[0].encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes() and os.readlink(entry / "cwd").endswith(" (deleted)"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("config", CONFIGS)
def test_infinite_loop_times_out(config: str) -> None:
    result = run_program("while True:\n    pass\n", FAST, **CONFIGS[config])
    assert result.status == "timeout", result
    assert not result.passed
    assert _sandbox_processes() == []


@pytest.mark.parametrize("config", CONFIGS)
def test_fork_bomb_is_contained(config: str) -> None:
    bomb = "import os\nwhile True:\n    os.fork()\n"
    result = run_program(bomb, FAST, **layers(config, "processes"))
    assert not result.passed and result.status in ("exception", "timeout", "killed"), result
    assert _sandbox_processes() == [], "the fork bomb left processes behind"


@pytest.mark.parametrize("config", CONFIGS)
def test_memory_hog_is_stopped(config: str) -> None:
    hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))\n"
    result = run_program(hog, FAST, **CONFIGS[config])
    assert not result.passed
    assert result.status in ("exception", "killed"), result
    if result.status == "exception":
        assert result.exception == "MemoryError"


@pytest.mark.parametrize("config", CONFIGS)
def test_huge_file_is_stopped(config: str) -> None:
    result = run_program("open('big', 'wb').write(b'x' * 4 * 2**20)\n", FAST, **CONFIGS[config])
    assert not result.passed, result  # 4 MiB > file_size_mb=1: SIGXFSZ or EFBIG


@pytest.mark.parametrize("config", CONFIGS)
def test_files_outside_the_sandbox_are_untouched(config: str, tmp_path: Path) -> None:
    kw = layers(config, "files")
    canary = tmp_path / "canary.txt"
    canary.write_text("original\n")
    created = tmp_path / "created.txt"
    attacks = {
        "overwrite": f"open({str(canary)!r}, 'w').write('pwned')",
        "append": f"open({str(canary)!r}, 'a').write('pwned')",
        "os.open": f"import os\nos.write(os.open({str(canary)!r}, os.O_WRONLY | os.O_TRUNC), b'pwned')",
        "delete": f"import os\nos.remove({str(canary)!r})",
        "rename": f"import os\nos.rename({str(canary)!r}, {str(created)!r})",
        "rmtree": f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        "create": f"open({str(created)!r}, 'w').write('new')",
        "chmod": f"import os\nos.chmod({str(canary)!r}, 0o777)",
    }
    mode = canary.stat().st_mode
    results = run_programs(list(attacks.values()), FAST, progress=False, **kw)
    for name, result in zip(attacks, results, strict=True):
        assert not result.passed, f"{name}: {result}"
        assert result.status == "exception", f"{name}: {result}"
    assert canary.read_text() == "original\n" and canary.stat().st_mode == mode
    assert not created.exists()


@pytest.mark.parametrize("config", CONFIGS)
def test_network_is_off(config: str) -> None:
    kw = layers(config, "network")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    got: list[bytes] = []

    def serve() -> None:
        try:
            while True:
                conn, _ = server.accept()
                got.append(conn.recv(100) or b"<connected>")
                conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    program = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'secret')\n"
    try:
        result = run_program(program, FAST, **kw)
        # the server side works: a connection from this process does arrive
        control = socket.create_connection(("127.0.0.1", port), timeout=2)
        control.sendall(b"control")
        control.close()
        thread.join(timeout=5)
    finally:
        server.close()
    assert not result.passed and result.status == "exception", result
    assert got == [b"control"], f"the sandboxed program reached the server: {got}"


@pytest.mark.parametrize("config", CONFIGS)
def test_killing_the_parent_fails(config: str) -> None:
    kw = layers(config, "signals")
    me = os.getpid()
    program = f"import os, signal\nos.kill({me}, signal.SIGKILL)\nos.kill(os.getppid() or {me}, signal.SIGKILL)\n"
    result = run_program(program, FAST, **kw)
    assert not result.passed, result  # and we are still here to check it
    assert result.status == "exception"


def test_isolation_is_reported_on_every_result() -> None:
    result = run_program("pass", FAST)
    assert result.passed
    assert set(result.isolation) >= {"netns", "pidns", "uid", "guard"}
    assert result.isolation["guard"] is True
    assert set(ISO) >= {"network", "signals", "new_processes", "files"}


@pytest.mark.parametrize(
    ("program", "status", "exception"),
    [
        ("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\n", "passed", None),
        ("def add(a, b):\n    return a - b\nassert add(2, 3) == 5\n", "exception", "AssertionError"),
        ("def add(a, b):\n    return a + c\nadd(1, 2)\n", "exception", "NameError"),
        ("def add(a, b:\n    return a\n", "exception", "SyntaxError"),
        ("import math\nassert math.gcd(12, 18) == 6\nimport hashlib\nhashlib.md5(b'x')\n", "passed", None),
        ("raise SystemExit(0)\n", "exception", "SystemExit"),
        ("import os\nos._exit(0)\n", "no_verdict", None),
    ],
)
def test_outcomes_are_classified(program: str, status: str, exception: str | None) -> None:
    result = run_program(program, FAST)
    assert (result.status, result.exception) == (status, exception), result


def test_environment_and_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    program = (
        "import os\n"
        "assert os.listdir('.') == [], os.listdir('.')\n"
        "assert 'SECRET_TOKEN' not in os.environ\n"
        "assert sorted(os.environ) == ['HOME', 'LANG', 'LC_ALL', 'PATH', 'TMPDIR'], sorted(os.environ)\n"
        "assert os.environ['HOME'] == os.getcwd()\n"
        "open('scratch.txt', 'w').write('inside is fine')\n"
        "print(os.getcwd())\n"
    )
    result = run_program(program, FAST)
    assert result.passed, result
    workdir = result.stdout.strip()
    assert workdir and not os.path.exists(workdir), "the temporary directory was not removed"


def test_run_programs_keeps_order_in_parallel() -> None:
    programs = [f"import time\ntime.sleep(0.2)\nassert {i} % 2 == 0\n" for i in range(6)]
    results = run_programs(programs, FAST, workers=3, progress=False)
    assert [r.passed for r in results] == [True, False, True, False, True, False]


def test_bad_limits_are_named() -> None:
    with pytest.raises(ValueError, match="timeout=0"):
        Limits(timeout=0)
    with pytest.raises(ValueError, match="workers=-1"):
        run_programs(["pass"], workers=-1)


def test_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    assert not sandbox.code_execution_confirmed()
    with pytest.raises(sandbox.UnsafeCodeNotConfirmed, match="--confirm_run_unsafe_code"):
        sandbox.require_code_execution_opt_in("humaneval_brackets")
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    assert sandbox.code_execution_confirmed()
    sandbox.require_code_execution_opt_in("humaneval_brackets")
