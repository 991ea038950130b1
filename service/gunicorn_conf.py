"""Gunicorn's configuration, for `make serve` and the container image.

Every value comes from the same Settings the app reads (environment variables), so the
Kubernetes manifests tune the server and the app in one place.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
from typing import Any

# Before prometheus_client is imported anywhere: it picks in-memory or file-backed values at
# import time, and workers inherit the master's choice. File-backed values let one scrape of any
# worker report the whole pod.
_OWN_METRICS_DIR: str | None = None
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    _OWN_METRICS_DIR = tempfile.mkdtemp(prefix="prometheus-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _OWN_METRICS_DIR

from prometheus_client import multiprocess  # noqa: E402

from service.settings import load_settings  # noqa: E402

_settings = load_settings()

wsgi_app = "service.main:create_app()"
worker_class = "service.http_server.UvicornWorker"
bind = [f"{_settings.host}:{_settings.port}"]
# Each worker listens on its own socket (SO_REUSEPORT; Gunicorn then opens the sockets in the
# workers, not the master) and the kernel spreads new connections across them by hash. With one
# shared socket, the worker that wakes first accepts a whole burst of connections: under 64
# keep-alive connections one worker often served them all and the pod used one core of two
# (docs/benchmarks.md). The price: connections still queued on a worker's socket when it exits
# (recycling, scale-down) are reset, unless the node sets net.ipv4.tcp_migrate_req=1.
reuse_port = True
workers = _settings.web_concurrency
timeout = _settings.worker_timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.keepalive
# Recycle workers now and then (bounds any slow leak); the jitter keeps them from all
# restarting at once.
max_requests = _settings.max_requests
max_requests_jitter = _settings.max_requests_jitter
# X-Forwarded-For is handled by the app alone (main.py, TRUSTED_PROXIES); the workers' own
# proxy handling is off (http_server.py), and Gunicorn trusts nobody's.
forwarded_allow_ips = ""
# The app writes one JSON access line per request itself (ACCESS_LOG=json|off).
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
# The heartbeat file lives in memory: the image runs with a read-only root filesystem.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
# Each worker opens its own database pool after the fork.
preload_app = False
proc_name = _settings.app_name
# Gunicorn 27's control socket lives under $HOME, which is read-only in the image.
control_socket_disable = True

logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "loggers": {"gunicorn.error": {"handlers": ["console"], "level": loglevel.upper()}},
}


def on_starting(server: Any) -> None:
    # Start with no figures left over from an earlier run.
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    server.log.info(
        json.dumps({"event": "starting", "workers": workers, "bind": bind, "timeout": timeout})
    )


def post_worker_init(_worker: Any) -> None:
    # The worker has imported and built the app: hundreds of thousands of long-lived objects
    # (SQLAlchemy, FastAPI, pydantic) that every full collection would walk again. Freezing them
    # moves them out of the collector's sight; measured on /users/me, a worker's CPU per request
    # fell by a fifth to two fifths (docs/benchmarks.md). Only cyclic garbage among these start-up
    # objects is never collected; the objects of requests are collected as before.
    gc.freeze()


def child_exit(_server: Any, worker: Any) -> None:
    # Drops the dead worker's live gauges. Its counters stay (their totals must survive), about
    # 16 KiB on disk per recycled worker: /tmp needs room for MAX_REQUESTS-driven recycling.
    multiprocess.mark_process_dead(worker.pid)


def on_exit(_server: Any) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(_OWN_METRICS_DIR, ignore_errors=True)
