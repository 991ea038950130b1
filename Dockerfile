# syntax=docker/dockerfile:1
# Two stages: dependencies are installed from uv.lock with build tools available; the final
# image gets only the virtual environment and the service code, and runs as a non-root user.
# Same base in both stages: the virtual environment's interpreter path must exist in the final one.
# Pinned by digest (the multi-arch index: amd64 and arm64), both stages alike; Dependabot
# (docker ecosystem) proposes the next one.
FROM python:3.11-slim-bookworm@sha256:b18992999dbe963a45a8a4da40ac2b1975be1a776d939d098c647482bcad5cba AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock ./
# The service's runtime dependencies only: no dev, infra or load-test groups.
RUN uv sync --frozen --no-default-groups --no-install-project
COPY service ./service
RUN python -m compileall -q service

FROM python:3.11-slim-bookworm@sha256:b18992999dbe963a45a8a4da40ac2b1975be1a776d939d098c647482bcad5cba AS runtime
LABEL org.opencontainers.image.title="blueprint" \
      org.opencontainers.image.description="FastAPI service of the FastAPI + Pulumi + Locust blueprint"
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=build /src/service ./service
COPY alembic.ini ./
# jemalloc in place of glibc's malloc (LD_PRELOAD, at one path on amd64 and arm64): after a
# login flood, glibc kept the freed memory of hundreds of queued requests inside its heaps,
# while jemalloc returns it, and a worker starts smaller (docs/benchmarks.md, "Worker memory").
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2=5.3.0-1 \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2" /usr/local/lib/libjemalloc.so.2
# Nothing is written under / at run time: bytecode is precompiled, metrics go to /tmp (an
# emptyDir in Kubernetes), Gunicorn's heartbeat to /dev/shm.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    LD_PRELOAD=/usr/local/lib/libjemalloc.so.2
USER 10001:10001
EXPOSE 8000
# Gunicorn's graceful shutdown: stop accepting, finish in-flight requests, exit.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '8000'), timeout=2)"]
CMD ["gunicorn", "--config", "python:service.gunicorn_conf", "service.main:create_app()"]
