"""A Ray session for any stage that fans work out (sweep cells, search candidates), and what they share:
the flags of where work runs (:class:`ClusterSettings`), worker sizing, a worker's set-up, and reading a
worker's result (:func:`remote_value`).

Ray is an optional dependency (``pip install 'lmeval-layerprune[ray]'``) imported only here, and
only when a session is opened::

    with ray_session(address=None) as cluster:            # a local cluster, stopped afterwards
        n = cluster.fit_workers(None, gpus=0, threads=1)   # as many workers as the resources allow
        ActorCls = cluster.ray.remote(MyWorker).options(**worker_resources(0, 1))

*Token authentication.* Ray 2.60 turns token authentication on for the local clusters
``ray.init()`` starts and writes a token to ``~/.ray/auth_token``. A local cluster started here
keeps authentication on but hands Ray a fresh token through the environment (``RAY_AUTH_TOKEN``,
inherited by Ray's own processes and gone when the session ends), so nothing is written under the
home folder. Joining a cluster (``address``) uses the cluster's own setting: export the cluster's
token as ``RAY_AUTH_TOKEN`` (or ``RAY_AUTH_TOKEN_PATH``) where the driver runs.

*Threads and devices.* Ray sets ``OMP_NUM_THREADS`` of each worker from its ``num_cpus``;
:func:`prepare_worker` also sets torch's thread count and, for a worker without GPUs, hides CUDA
so that only GPU workers touch it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lmeval_layerprune.errors import ClusterError, LayerPruneError

RAY_EXTRA = "pip install 'lmeval-layerprune[ray]'"
_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")
#: one token per driver process: Ray caches the token it read, so every local session of a process shares it
_TOKEN = secrets.token_hex(32)
#: the executors ``sweep --executor`` and ``select --executor`` know
EXECUTORS = ("local", "ray")


@dataclass
class ClusterSettings:
    """Where the work runs: ``local`` (one process, one loaded model; the default) or ``ray`` (workers
    that each hold the model, on this machine or a cluster). Nothing here changes a result."""

    executor: str = field(
        default="local",
        metadata={"help": "local: one process, one loaded model (default); ray: Ray workers (pip install "
        "'lmeval-layerprune[ray]')"},
    )  # fmt: skip
    workers: int | None = field(
        default=None,
        metadata={"help": "ray: workers, each holding the model (default: as many as the resources allow)"},
    )
    gpus_per_worker: float | None = field(
        default=None, metadata={"help": "ray: GPUs per worker, fractions allowed (default: 1 with GPUs, else 0)"}
    )
    threads_per_worker: int = field(
        default=1, metadata={"help": "ray: CPU threads (Ray num_cpus, OMP_NUM_THREADS) per worker"}
    )
    ray_address: str | None = field(
        default=None,
        metadata={
            "help": "ray: join this cluster (e.g. auto, or HEAD:6379); default: start a local one, stop it after"
        },
    )
    max_retries: int = field(
        default=2,
        metadata={"help": "ray: re-runs of one piece of work whose worker died or timed out, before the run stops"},
    )

    def worker_gpus(self, cluster: Cluster) -> float:
        """GPUs per worker: as asked, else 1 on a cluster with GPUs and 0 without."""
        if self.gpus_per_worker is not None:
            return self.gpus_per_worker
        return 1.0 if cluster.gpus else 0.0


def require_ray() -> None:
    """Fail now, in one line naming the extra, when Ray is not installed (without importing it)."""
    try:
        found = sys.modules.get("ray", True) is not None and importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ClusterError(f"the ray executor needs Ray, which is not installed: {RAY_EXTRA}")


def import_ray() -> Any:
    """The ``ray`` module, or one clear error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise ClusterError(f"the ray executor needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


@dataclass(frozen=True)
class Cluster:
    """An open Ray session: the module, and the resources the cluster had when it was opened."""

    ray: Any
    cpus: float
    gpus: float
    nodes: int
    started: bool  # a local cluster started for this session (stopped when it ends)

    def fit_workers(self, workers: int | None, gpus: float, threads: int) -> int:
        """How many workers of ``gpus`` GPUs and ``threads`` CPUs to start: ``workers``, or as many as fit.

        Raises :class:`ClusterError` when not even one fits (Ray would wait for it forever)."""
        if threads < 1:
            raise ClusterError(f"--threads-per-worker {threads} must be at least 1")
        if gpus < 0:
            raise ClusterError(f"--gpus-per-worker {gpus:g} must be 0 or more")
        if workers is not None and workers < 1:
            raise ClusterError(f"--workers {workers} must be at least 1")
        fits = math.floor(self.cpus / threads + 1e-9)
        if gpus > 0:
            fits = min(fits, math.floor(self.gpus / gpus + 1e-9))
        if fits < 1:
            have = f"{self.cpus:g} CPUs and {self.gpus:g} GPUs"
            raise ClusterError(
                f"a worker needs {threads} CPU thread(s) and {gpus:g} GPU(s), but the Ray cluster has {have} in all; "
                "lower --threads-per-worker / --gpus-per-worker, or add nodes"
            )
        return fits if workers is None else workers


def worker_resources(gpus: float, threads: int) -> dict[str, Any]:
    """Ray ``options`` of one worker (actor or task)."""
    return {"num_cpus": threads, "num_gpus": gpus}


def worker_label() -> str:
    """``host:pid`` of this process, for progress lines."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lost_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """The Ray errors that mean the worker is gone (killed, out of memory, node lost), not that the work failed."""
    return (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.TaskCancelledError)


def remote_value(ray: Any, ref: Any, failed: str, error: type[LayerPruneError] = ClusterError) -> Any:
    """``ray.get(ref)``, with a worker's own :class:`LayerPruneError` raised as itself and any other failure
    of the work as one ``error`` line starting ``failed``. Lost workers (:func:`lost_errors`) propagate."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else None
        if isinstance(cause, LayerPruneError):
            raise cause from None
        raise error(f"{failed}: {cause or e}") from None


def prepare_worker(gpus: float, threads: int) -> str:
    """Inside a Ray worker: threads and device; returns the torch device to use (``cpu`` or ``cuda``)."""
    if not gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU workers never touch CUDA
    import torch

    torch.set_num_threads(max(1, int(threads)))
    return "cuda" if gpus else "cpu"


@contextlib.contextmanager
def ray_session(
    address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None
) -> Iterator[Cluster]:
    """Join the Ray cluster at ``address``, or start a local one (``num_cpus``/``num_gpus``: its size,
    default all of this machine) and stop it afterwards. Inside an already initialised Ray (a caller
    that ran ``ray.init`` itself) that session is used and left running."""
    saved = {k: os.environ.get(k) for k in _AUTH_VARS}
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        yield _describe(ray, started=False)
        return
    if address is None and "RAY_AUTH_TOKEN" not in os.environ and os.environ.get("RAY_AUTH_MODE") != "disabled":
        # token authentication on, the token in the environment: nothing written under ~/.ray
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = _TOKEN
        if ray is not None:
            _reload_auth_settings()
    ray = import_ray()  # reads the authentication settings on first import
    try:
        kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
        if address is None:
            kwargs.update(num_cpus=num_cpus, num_gpus=num_gpus)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ClusterError(f"could not start or join {where}: {first}") from None
        try:
            yield _describe(ray, started=address is None)
        finally:
            ray.shutdown()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _reload_auth_settings() -> None:
    """Make an already imported Ray read the authentication settings of the environment again."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # another Ray release: it reads them at init
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _describe(ray: Any, started: bool) -> Cluster:
    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return Cluster(ray, float(res.get("CPU", 0)), float(res.get("GPU", 0)), nodes, started)
