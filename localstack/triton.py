"""Launch a real, local ``tritonserver`` from the ``nvidia-pytriton`` wheel, from asyncio.

The wheel ships a complete Triton 2.51 server with the Python backend; this module starts it on
loopback ports against a plain model repository (the same repository loads unchanged in NVIDIA's
container). The facts behind each step are in ``/work/shared/notes/triton-on-cpu.md`` ("What it
takes to start it"); comments below cite that list as *notes step N*.

Readiness is checked over the KServe v2 gRPC API (``ServerReady``, ``ModelReady``) with the raw
generated stubs on ``grpc.aio``, every call with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from voxwire.child_signal import signal_child

__all__ = [
    "TritonPorts",
    "TritonServer",
    "TritonStartError",
    "default_model_repository",
    "pytriton_server_root",
]

_LOOPBACK = "127.0.0.1"
_POLL_INTERVAL_S = 0.2
_RPC_DEADLINE_S = 1.0
_LOG_TAIL_BYTES = 4000


class TritonStartError(RuntimeError):
    """The server exited or did not become ready in time; the message ends with the log tail."""


@dataclass(frozen=True, slots=True)
class TritonPorts:
    grpc: int
    http: int
    metrics: int


def default_model_repository() -> Path:
    """The project's ``model_repository/`` (a sibling of the ``localstack`` package)."""
    return (Path(__file__).resolve().parent.parent / "model_repository").resolve()


def pytriton_server_root() -> Path:
    """``pytriton/tritonserver`` inside site-packages, located without importing pytriton.

    Raises:
        TritonStartError: the nvidia-pytriton wheel is not installed.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError("nvidia-pytriton is not installed (no 'pytriton' package)")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise TritonStartError(f"no tritonserver binary under {root}")
    return root


def _free_loopback_ports(count: int) -> list[int]:
    # Bind all sockets before closing any, so the kernel hands out distinct ports. There is a
    # small window before tritonserver binds them; acceptable for a local/test launcher.
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((_LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _prepare_backends(server_root: Path, workdir: Path) -> Path:
    """Copy the backends dir into ``workdir`` with the stub for this interpreter (notes step 1).

    The copy is reused when it is already complete, so repeated starts are cheap. Nothing is
    written into site-packages.
    """
    backends = workdir / "backends"
    stub_target = backends / "python" / "triton_python_backend_stub"
    if stub_target.is_file():
        return backends
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub_source = server_root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub_source.is_file():
        raise TritonStartError(f"the wheel has no Python backend stub for Python {version}")
    workdir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="backends-", dir=workdir))
    shutil.copytree(server_root / "backends", staging, dirs_exist_ok=True)
    shutil.copy2(stub_source, staging / "python" / "triton_python_backend_stub")
    # Rename last: a concurrent or interrupted start never sees a half-copied directory.
    try:
        staging.rename(backends)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not stub_target.is_file():
            raise
    return backends


def _server_environment(server_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Notes step 2: the interpreter's own libpython must win over the distribution's (a patch
    # mismatch breaks multiprocessing in the stub), and the copied stub no longer finds the
    # wheel's bundled libraries through its relative RPATH, so add nvidia_pytriton.libs.
    lib_dirs = [
        str(sysconfig.get_config_var("LIBDIR") or ""),
        str(server_root.parent.parent / "nvidia_pytriton.libs"),
    ]
    existing = env.get("LD_LIBRARY_PATH", "")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [d for d in lib_dirs if d] + ([existing] if existing else [])
    )
    # Notes step 3: the stub builds sys.path from the first python3 on PATH, so the venv's bin/
    # goes first and model code imports pocketsphinx/espeakng_loader from this venv.
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    return env


def _parent_death_prefix() -> list[str]:
    """``setpriv --pdeathsig TERM --`` when available (util-linux): if the launching process
    dies without stop() (a crashed test run), the kernel sends the server SIGTERM instead of
    leaving it running with its ports. setpriv execs, so the server keeps the spawned pid. Done
    this way because preexec_fn is unsafe once threads exist (grpc has them)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def _model_names(model_repository: Path) -> list[str]:
    return sorted(p.name for p in model_repository.iterdir() if (p / "config.pbtxt").is_file())


class TritonServer:
    """One ``tritonserver`` process on loopback ports, started and stopped from asyncio."""

    def __init__(
        self,
        model_repository: Path,
        *,
        ports: TritonPorts | None = None,
        models: Sequence[str] | None = None,
        workdir: Path | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._repository = Path(model_repository).resolve()
        if ports is None:
            grpc_port, http_port, metrics_port = _free_loopback_ports(3)
            ports = TritonPorts(grpc=grpc_port, http=http_port, metrics=metrics_port)
        self._ports = ports
        self._models = list(models) if models is not None else None
        self._workdir = workdir
        self._owns_workdir = workdir is None
        self._log_path = log_path
        self._extra_args = list(extra_args)
        self._process: asyncio.subprocess.Process | None = None
        self._killed = False

    @property
    def ports(self) -> TritonPorts:
        return self._ports

    @property
    def grpc_url(self) -> str:
        return f"{_LOOPBACK}:{self._ports.grpc}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    @property
    def killed(self) -> bool:
        """Whether ``kill`` was called: true at once, while ``returncode`` stays None until
        asyncio has reaped the process (a caller that restarts a killed server must not wait
        for that, or miss a kill made just before)."""
        return self._killed

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def _command(self, server_root: Path, backends: Path) -> list[str]:
        ports = self._ports
        command = [
            *_parent_death_prefix(),
            str(server_root / "bin" / "tritonserver"),
            f"--model-repository={self._repository}",
            f"--backend-directory={backends}",
            # Notes step 4: the defaults listen on 0.0.0.0; everything stays on loopback.
            f"--grpc-address={_LOOPBACK}",
            f"--http-address={_LOOPBACK}",
            f"--metrics-address={_LOOPBACK}",
            f"--grpc-port={ports.grpc}",
            f"--http-port={ports.http}",
            f"--metrics-port={ports.metrics}",
            "--log-verbose=0",
            # Triton waits this long for in-flight work after SIGTERM; keep stop() quick.
            "--exit-timeout-secs=5",
        ]
        if self._models is not None:
            # Notes step 5: explicit mode loads only what a test needs, which keeps start-up short.
            command.append("--model-control-mode=explicit")
            command += [f"--load-model={name}" for name in self._models]
        else:
            command.append("--model-control-mode=none")
        return command + self._extra_args

    # The timeout is this method's own contract (on expiry it kills the server and reports the
    # log tail), which an outer asyncio.timeout could not do: hence the noqa.
    async def start(self, timeout: float = 90.0) -> None:  # noqa: ASYNC109
        """Spawn the server and wait until it and every model are ready.

        Raises:
            TritonStartError: the process exited, or was not ready within ``timeout`` seconds
                (the process is then killed); the message carries the log tail.
        """
        if self._process is not None:
            raise RuntimeError("TritonServer.start() called twice")
        try:
            # All file-system work (copying ~1.5 MB of backends, listing models, opening the
            # log) runs in a worker thread: start() never blocks the event loop.
            server_root, backends, models, log = await asyncio.to_thread(self._prepare)
            # The child writes straight into the log file: no pipe that nobody reads can fill
            # up and stall the server. Our handle closes after the spawn; the child keeps its own.
            with log:
                self._process = await asyncio.create_subprocess_exec(
                    *self._command(server_root, backends),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=_server_environment(server_root),
                    cwd=str(self._workdir),
                    # Its own process group, with the Python backend's stub processes: a SIGKILL
                    # (kill) reaches them too (after a SIGKILL of the server alone they lingered
                    # as orphans).
                    start_new_session=True,
                )
            await self._wait_ready(models, time.monotonic() + timeout, timeout)
        except BaseException:
            self.kill()
            if self._process is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._process.wait(), 5.0)
            await self._remove_workdir()
            raise

    def _prepare(self) -> tuple[Path, Path, list[str], BinaryIO]:
        server_root = pytriton_server_root()
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="voxwire-triton-"))
        backends = _prepare_backends(server_root, self._workdir)
        if self._log_path is None:
            self._log_path = self._workdir / "tritonserver.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        models = self._models if self._models is not None else _model_names(self._repository)
        return server_root, backends, models, self._log_path.open("ab")

    async def _wait_ready(self, models: Sequence[str], deadline: float, budget_s: float) -> None:
        assert self._process is not None
        async with grpc.aio.insecure_channel(self.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while True:
                if self._process.returncode is not None:
                    tail = await asyncio.to_thread(self.log_tail)
                    raise TritonStartError(
                        f"tritonserver exited with code {self._process.returncode}\n{tail}"
                    )
                if await self._all_ready(stub, models):
                    return
                if time.monotonic() >= deadline:
                    tail = await asyncio.to_thread(self.log_tail)
                    raise TritonStartError(
                        f"tritonserver not ready within {budget_s:.0f} s\n{tail}"
                    )
                await asyncio.sleep(_POLL_INTERVAL_S)

    @staticmethod
    async def _all_ready(
        stub: service_pb2_grpc.GRPCInferenceServiceStub, models: Sequence[str]
    ) -> bool:
        try:
            server = await stub.ServerReady(
                service_pb2.ServerReadyRequest(), timeout=_RPC_DEADLINE_S
            )
            if not server.ready:
                return False
            for name in models:
                reply = await stub.ModelReady(
                    service_pb2.ModelReadyRequest(name=name), timeout=_RPC_DEADLINE_S
                )
                if not reply.ready:
                    return False
        except grpc.aio.AioRpcError:
            return False  # not listening yet, or still loading
        return True

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """The last ``max_bytes`` of the server log (blocking file read: small, but from async
        code call it through ``asyncio.to_thread``)."""
        if self._log_path is None or not self._log_path.is_file():
            return "(no log)"
        with self._log_path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - max_bytes))
            return log.read().decode("utf-8", errors="replace")

    async def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Idempotent."""
        process = self._process
        if process is not None and process.returncode is None:
            signal_child(process, signal.SIGTERM)  # not send_signal: voxwire/child_signal.py
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                self.kill()
                await process.wait()
        await self._remove_workdir()

    async def _remove_workdir(self) -> None:
        # Only a workdir we created; with the default log_path the log goes with it.
        if self._owns_workdir and self._workdir is not None:
            await asyncio.to_thread(shutil.rmtree, self._workdir, True)
            self._workdir = None

    def kill(self) -> None:
        """SIGKILL the server and its stub processes at once (for failover tests): the whole
        process group it was started in. The shared-memory regions of its Python backend,
        which a server that is killed cannot remove, are removed too."""
        process = self._process
        if process is not None:
            self._killed = True
            regions = _shm_regions(process.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            for name in regions:  # unlinking a mapped region is safe: it goes with the last map
                with contextlib.suppress(OSError):
                    os.unlink(f"/dev/shm/{name}")

    async def __aenter__(self) -> TritonServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


_SHM_PREFIX = "triton_python_backend_shm_region_"


def _shm_regions(pgid: int) -> set[str]:
    """Names of the Python backend's shared-memory regions in use by process group ``pgid``
    (each stub process is given its region's name on its command line); empty where /proc is
    not readable."""
    names: set[str] = set()
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # Field 5 of /proc/<pid>/stat is the process group (after the ")" of the name).
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for arg in (proc / "cmdline").read_bytes().split(b"\0"):
                if arg.startswith(_SHM_PREFIX.encode()) and b"/" not in arg:
                    names.add(arg.decode())
    return names
