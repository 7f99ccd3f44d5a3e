"""Run untrusted (model-written) Python programs, each in its own contained process.

Every program runs in a fresh ``python -I -S`` process started by :func:`run_program`:

* **limits** (``resource.setrlimit``): CPU seconds, address space, size of any file it
  writes, open files, and no new processes or threads (``RLIMIT_NPROC`` = 0); core dumps off;
* a **wall-clock timeout**; the process is the leader of a new session, and its whole
  process group is killed with SIGKILL on timeout and again after it exits;
* an **empty temporary working directory** (``HOME`` and ``TMPDIR`` too), removed afterwards;
* a **scrubbed environment** (``PATH``, ``LANG``, ``HOME``, ``TMPDIR`` only), no site-packages,
  stdin closed, stdout/stderr captured to unlinked files (bounded by the file-size limit);
* where the kernel allows (:func:`isolation`): new **network** and **PID namespaces** (no
  interface but a downed loopback; the program cannot see or signal any process outside,
  and everything it started dies with it), entered with an unprivileged user namespace, or
  directly when running as root; when running as root the program also runs as
  ``nobody`` (uid/gid 65534), so the kernel keeps it out of files it does not own;
* a **Python guard** (an audit hook installed before the program runs): refuses sockets,
  new processes, signals to other processes, ``ctypes``, and writing, creating, renaming
  or deleting anything outside the working directory. It stops accidents, not a program
  written to defeat it (Python-level hooks can be subverted from Python); the kernel layers
  above are the real barrier where they apply.

The verdict travels back through a private pipe written after the program finished, so a
program that exits early (``sys.exit``, ``os._exit``) is reported as such, not as passed.
What it does *not* protect against: reading files the user can read, a program that
targets the harness itself to forge its verdict, or CPU/memory pressure up to the limits.
Run evaluations of untrusted models inside a container or VM as well.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from lmeval_layerprune.errors import UnsafeCodeNotConfirmed

#: Status values of :class:`ExecutionResult`.
STATUSES = ("passed", "exception", "timeout", "killed", "no_verdict")


@dataclass(frozen=True)
class Limits:
    """Resource limits for one program (all enforced by the kernel)."""

    timeout: float = 10.0  # wall-clock seconds
    cpu_seconds: int = 10  # RLIMIT_CPU (SIGKILL one second after the soft limit)
    memory_mb: int = 1024  # RLIMIT_AS, address space
    file_size_mb: int = 16  # RLIMIT_FSIZE, largest file the program may write (stdout included)
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 0  # RLIMIT_NPROC: new processes/threads allowed (0: none)

    def __post_init__(self) -> None:
        for name in ("timeout", "cpu_seconds", "memory_mb", "file_size_mb", "open_files"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sandbox limit {name}={getattr(self, name)!r} must be positive")
        if self.processes < 0:
            raise ValueError(f"sandbox limit processes={self.processes!r} must be >= 0")


@dataclass
class ExecutionResult:
    """What happened to one program."""

    status: str  # one of STATUSES
    exception: str | None = None  # exception type name when status == "exception"
    message: str = ""
    returncode: int | None = None
    duration: float = 0.0
    stdout: str = ""  # last few KiB
    stderr: str = ""
    isolation: dict[str, Any] = field(default_factory=dict)  # the layers that applied

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The bootstrap runs as `python -I -S -c BOOTSTRAP CONFIG_JSON`, reads the program from stdin,
# enters namespaces, forks (the child is PID 1 of the new PID namespace where that applies),
# drops privileges, sets limits, installs the guard, and runs the program. It is trusted code
# and must only use the standard library.
_BOOTSTRAP = r"""
import json, os, sys, resource, signal
cfg = json.loads(sys.argv[1])
src = sys.stdin.read()
fd = cfg["fd"]
iso = {"netns": False, "pidns": False, "userns": False, "uid": os.getuid(), "guard": bool(cfg["guard"])}
CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x10000000, 0x40000000, 0x20000000

def _unshare(flags):
    if hasattr(os, "unshare"):
        os.unshare(flags)
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare failed")

def _prctl_pdeathsig():
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass

if cfg["namespaces"]:
    # one unshare call per attempt, so a failed attempt changes nothing
    attempts = [(CLONE_NEWNET | CLONE_NEWPID, False)] if os.geteuid() == 0 else []
    attempts += [(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID, True), (CLONE_NEWUSER | CLONE_NEWNET, True)]
    for flags, user in attempts:
        try:
            _unshare(flags)
        except OSError:
            continue
        iso.update(netns=True, pidns=bool(flags & CLONE_NEWPID), userns=user)
        break

pid = os.fork()
if pid:
    # the nanny: wait for the program, then leave with its status
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            os._exit(70)
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))

# the program's process
if cfg["drop_uid"] and os.geteuid() == 0 and not iso["userns"]:
    try:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        iso["uid"] = 65534
    except OSError:
        pass
_prctl_pdeathsig()
for mod in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
    del sys.modules[mod]
lim = cfg["limits"]
def _set(res, value, hard=None):
    try:
        resource.setrlimit(res, (value, value if hard is None else hard))
    except (ValueError, OSError):
        pass
_set(resource.RLIMIT_CORE, 0)
_set(resource.RLIMIT_CPU, lim["cpu_seconds"], lim["cpu_seconds"] + 1)
_set(resource.RLIMIT_FSIZE, lim["file_size_mb"] * 2**20)
_set(resource.RLIMIT_NOFILE, max(lim["open_files"], fd + 1))
_set(resource.RLIMIT_AS, lim["memory_mb"] * 2**20)
_set(resource.RLIMIT_NPROC, lim["processes"])

def _verdict(**kw):
    data = json.dumps({**kw, "isolation": iso}).encode()
    try:
        os.write(fd, data)
    except OSError:
        pass

if cfg["guard"]:
    root = os.path.realpath(os.getcwd())
    me = os.getpid()
    BLOCK = ("os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system", "os.popen",
             "subprocess.Popen", "ctypes.", "os.setuid", "os.setgid", "os.setsid", "os.setpgid",
             "os.setpgrp", "socket.", "os.startfile", "pty.", "webbrowser.", "urllib.", "ftplib.",
             "http.", "smtplib.", "telnetlib.", "nntplib.", "poplib.", "imaplib.")
    NO_IMPORT = frozenset(("ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "_testcapi"))
    PATH_EVENTS = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
                   "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,), "os.chmod": (0,),
                   "os.chown": (0,), "os.utime": (0,), "shutil.rmtree": (0,), "os.chflags": (0,),
                   "os.lchmod": (0,), "os.lchown": (0,), "os.mkfifo": (0,), "os.mknod": (0,),
                   "os.setxattr": (0,), "os.removexattr": (0,), "shutil.copyfile": (1,),
                   "shutil.copytree": (1,), "shutil.move": (0, 1)}
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    _real, _join, _start, _fs = os.path.realpath, os.path.join, str.startswith, os.fsdecode

    def _inside(p):
        if isinstance(p, int):
            return True
        p = _real(_fs(p))
        return p == root or _start(p, root + "/")

    def _guard(event, args):
        if event == "import":
            if args[0] in NO_IMPORT:
                raise ImportError("sandbox: importing " + args[0] + " is not allowed")
            return
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & WRITE)
            if writing and path is not None and not _inside(path):
                raise PermissionError("sandbox: writing outside the working directory is not allowed: " + str(path))
            return
        if event in ("os.kill", "os.killpg", "signal.pthread_kill"):
            if event == "os.kill" and args[0] == me:
                return
            raise PermissionError("sandbox: signalling other processes is not allowed")
        if event in PATH_EVENTS:
            for i in PATH_EVENTS[event]:
                if i < len(args) and args[i] is not None and not _inside(args[i]):
                    raise PermissionError("sandbox: changing files outside the working directory is not allowed")
            return
        if _start(event, BLOCK):
            raise PermissionError("sandbox: " + event + " is not allowed")

    sys.addaudithook(_guard)

try:
    code = compile(src, "<program>", "exec", dont_inherit=True)
    del src
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
except BaseException as exc:
    try:
        msg = str(exc)[:1000]
    except BaseException:
        msg = "<unprintable>"
    _verdict(status="exception", exception=type(exc).__name__, message=msg)
    os._exit(1)
try:
    sys.stdout.flush()
    sys.stderr.flush()
except BaseException:
    pass
_verdict(status="passed")
os._exit(0)
"""

_TAIL = 4096


def _scrubbed_env(home: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home, "TMPDIR": home}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_tail(f: Any) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - _TAIL))
    return f.read().decode("utf-8", "replace")


def _rmtree(path: str) -> None:
    def fix(func: Callable, p: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


@functools.cache
def _python_readable_by_others() -> bool:
    """Whether ``nobody`` could import the standard library (a pyenv under /root, mode 0700, cannot)."""
    import sysconfig

    for key in ("stdlib", "platstdlib"):
        path = os.path.realpath(sysconfig.get_path(key))
        if not os.stat(path).st_mode & stat.S_IROTH:
            return False
        while True:
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return False
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
    dynload = os.path.join(sysconfig.get_path("platstdlib"), "lib-dynload")
    return not os.path.isdir(dynload) or bool(os.stat(dynload).st_mode & stat.S_IROTH)


def run_program(
    source: str,
    limits: Limits | None = None,
    *,
    namespaces: bool = True,
    guard: bool = True,
    drop_uid: bool = True,
) -> ExecutionResult:
    """Run one Python program in a new contained process and report what happened.

    ``namespaces``, ``guard`` and ``drop_uid`` turn off single layers (for tests that
    check each layer on its own); leave them on. Never raises for anything the program
    does; the result's ``status`` says it (``passed``, ``exception``, ``timeout``,
    ``killed`` by a signal or a limit, ``no_verdict`` when it exited before finishing).
    """
    limits = limits or Limits()
    work = tempfile.mkdtemp(prefix="lmeval-sandbox-")
    uid_drop = drop_uid and os.geteuid() == 0 and _python_readable_by_others()
    if uid_drop:
        os.chown(work, 65534, 65534)
    read_fd, write_fd = os.pipe()
    config = {
        "fd": write_fd,
        "guard": guard,
        "namespaces": namespaces,
        "drop_uid": uid_drop,
        "limits": asdict(limits),
    }
    cmd = [sys.executable, "-I", "-S", "-c", _BOOTSTRAP, json.dumps(config)]
    start = time.monotonic()
    timed_out = False
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    cmd,
                    cwd=work,
                    env=_scrubbed_env(work),
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                    pass_fds=(write_fd,),
                    start_new_session=True,
                    close_fds=True,
                )
            finally:
                os.close(write_fd)
            try:
                assert proc.stdin is not None
                proc.stdin.write(source.encode("utf-8", "surrogatepass"))
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                proc.wait(timeout=limits.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc.pid)  # anything left in the group, on timeout or not
            proc.wait()
            duration = time.monotonic() - start
            os.set_blocking(read_fd, False)
            chunks = []
            try:
                while chunk := os.read(read_fd, 65536):
                    chunks.append(chunk)
            except BlockingIOError:
                pass
            stdout, stderr = _read_tail(out), _read_tail(err)
    finally:
        os.close(read_fd)
        _rmtree(work)

    verdict: dict[str, Any] = {}
    if chunks:
        try:
            verdict = json.loads(b"".join(chunks).decode("utf-8", "replace"))
        except ValueError:
            verdict = {}
    rc = proc.returncode
    isolation = verdict.pop("isolation", {}) if isinstance(verdict, dict) else {}
    common = dict(returncode=rc, duration=duration, stdout=stdout, stderr=stderr, isolation=isolation)
    if timed_out:
        return ExecutionResult("timeout", message=f"wall-clock timeout after {limits.timeout:g} s", **common)
    if verdict.get("status") == "passed" and rc == 0:
        return ExecutionResult("passed", **common)
    if verdict.get("status") == "exception":
        return ExecutionResult(
            "exception", exception=verdict.get("exception"), message=verdict.get("message", ""), **common
        )
    signum = rc - 128 if rc is not None and rc > 128 else (-rc if rc is not None and rc < 0 else None)
    if signum in (signal.SIGXCPU, signal.SIGKILL) and duration >= limits.cpu_seconds:
        return ExecutionResult("timeout", message=f"CPU limit of {limits.cpu_seconds} s", **common)
    if signum:
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
        return ExecutionResult("killed", message=f"killed by {name}", **common)
    return ExecutionResult("no_verdict", message=f"exited with code {rc} before finishing", **common)


def run_programs(
    sources: Sequence[str],
    limits: Limits | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "running programs",
    **layers: bool,
) -> list[ExecutionResult]:
    """Run many programs in parallel (one process each; ``workers`` defaults to the CPU count).

    Results come back in the order of ``sources``. ``layers`` go to :func:`run_program`.
    """
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers={workers!r} must be >= 1")
    results: list[ExecutionResult | None] = [None] * len(sources)
    bar = None
    if progress and len(sources) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sources), desc=desc)
    lock = threading.Lock()

    def one(i: int) -> None:
        results[i] = run_program(sources[i], limits, **layers)
        if bar is not None:
            with lock:
                bar.update(1)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(len(sources))))
    if bar is not None:
        bar.close()
    return [r for r in results if r is not None]


_ISOLATION: dict[str, Any] | None = None


def isolation() -> dict[str, Any]:
    """The layers that apply on this machine, measured by running a probe program once.

    Keys: ``netns``/``pidns``/``userns`` (kernel namespaces entered), ``uid`` (the uid the
    program runs as), ``guard`` (the Python guard), and a summary of what stops each kind
    of harm: ``network``, ``signals`` (to processes outside), ``new_processes``, ``files``.
    """
    global _ISOLATION
    if _ISOLATION is None:
        probe = run_program("pass", Limits(timeout=30))
        iso = dict(probe.isolation)
        if not iso:
            raise RuntimeError(f"the sandbox could not run a trivial program: {probe.message} {probe.stderr}")
        iso["network"] = "kernel (network namespace)" if iso["netns"] else "python guard"
        iso["signals"] = (
            "kernel (PID namespace)"
            if iso["pidns"]
            else "kernel (runs as another user)"
            if iso["uid"] != os.geteuid()
            else "python guard"
        )
        iso["new_processes"] = (
            "kernel (RLIMIT_NPROC) + python guard" if iso["uid"] != 0 else "python guard (root ignores RLIMIT_NPROC)"
        )
        iso["files"] = "kernel (runs as nobody) + python guard" if iso["uid"] == 65534 else "python guard"
        _ISOLATION = iso
    return dict(_ISOLATION)


# --------------------------------------------------------------------------- opt-in


def code_execution_confirmed() -> bool:
    """Whether the user opted in to running model-written code.

    True when ``HF_ALLOW_CODE_EVAL=1`` is set, or when called (directly or indirectly)
    from lm-eval's ``evaluator.evaluate`` with ``confirm_run_unsafe_code=True``
    (``lm_eval --confirm_run_unsafe_code``).
    """
    if os.environ.get("HF_ALLOW_CODE_EVAL") == "1":
        return True
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "evaluate" and frame.f_globals.get("__name__") == "lm_eval.evaluator":
            return bool(frame.f_locals.get("confirm_run_unsafe_code", False))
        frame = frame.f_back
    return False


def require_code_execution_opt_in(what: str = "this task") -> None:
    """Raise :class:`UnsafeCodeNotConfirmed` unless :func:`code_execution_confirmed`."""
    if not code_execution_confirmed():
        raise UnsafeCodeNotConfirmed(
            f"{what} executes code written by the model. Opt in with `lm_eval ... --confirm_run_unsafe_code` "
            "(simple_evaluate(..., confirm_run_unsafe_code=True)), or set HF_ALLOW_CODE_EVAL=1 "
            "when calling the metric yourself."
        )
