"""Real processes for end-to-end tests: the production server (the image's exact command),
a dedicated redis-server, free ports. Every process is bounded in time and always stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from loadtests.sizing.stack import image_env_here
from tests.support.databases import ROOT

VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def image_command() -> list[str]:
    """The Dockerfile's exec-form CMD: what the container runs."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    cmd = next(line for line in reversed(lines) if line.startswith("CMD "))
    command: list[str] = json.loads(cmd.removeprefix("CMD "))
    return command


def make_image_venv(venv: Path) -> Path:
    """The image's environment at `venv`, made the way the Dockerfile's build stage makes it:
    the service's runtime dependencies from uv.lock, no dev, infra or load-test groups (those
    pull in modules the service would then import: redis-py loads OpenTelemetry when present,
    which costs each worker more memory than the image's workers have). Returns its bin/."""
    subprocess.run(
        [
            str(ROOT / ".tools" / "bin" / "uv"),
            "sync",
            "--frozen",
            "--no-default-groups",
            "--no-install-project",
            "--quiet",
        ],
        cwd=ROOT,
        env=os.environ | {"UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"},
        check=True,
    )
    return venv / "bin"


def wait_for(url: str, *, timeout: float = 60.0, status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer {status} within {timeout} s")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode

    def log_records(self) -> list[dict[str, object]]:
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return records


def start_server(
    env: dict[str, str],
    log_dir: Path,
    *,
    workers: int = 2,
    ready_timeout: float = 60.0,
    venv_bin: Path = VENV_BIN,
    command: list[str] | None = None,
) -> Server:
    """Start the image's CMD (Gunicorn + Uvicorn workers) from the repo root, on a free port,
    with the image's environment; `command` replaces the CMD (a CPU pin, another app)."""
    port = free_port()
    full_env = (
        os.environ
        | image_env_here()  # the Dockerfile's ENV (jemalloc, when this machine has it)
        | {
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": str(workers),
            "APP_ENV": "production",
            "JWT_SECRET": "e2e-" + "s" * 40,
            "ACCESS_LOG": "json",
        }
        | env
    )
    if "PROMETHEUS_MULTIPROC_DIR" not in env:  # the server's own, unless the test names one
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = log_dir / f"server-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        command or image_command(), cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT
    )
    server = Server(process, f"http://127.0.0.1:{port}", log_path, log)
    try:
        _wait_for_workers(server, workers, timeout=ready_timeout)
        wait_for(server.base_url + "/health/live", timeout=ready_timeout)
    except TimeoutError:
        server.stop()
        raise RuntimeError(f"server did not start:\n{log_path.read_text()[-3000:]}") from None
    return server


def _wait_for_workers(server: Server, workers: int, *, timeout: float) -> None:
    """Until every worker has finished its startup. With SO_REUSEPORT each worker has its own
    listen queue, so a request sent while one still boots waits there and is served later,
    after the caller's own timeout: a test counting requests would count it twice."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise TimeoutError("the server exited")
        started = server.log_path.read_text(errors="replace").count("Application startup complete")
        if started >= workers:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{workers} workers did not start within {timeout} s")


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def start_redis(port: int | None = None) -> RedisServer:
    """A dedicated redis-server that a test may stop and restart (the shared one stays up)."""
    port = port or free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return RedisServer(process, port)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")
