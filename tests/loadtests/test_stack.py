"""The measured pod's environment: the Dockerfile's ENV under the stack's settings_env."""

from __future__ import annotations

from pathlib import Path

from infra.components.app import settings_env
from loadtests.sizing.stack import (
    MIB,
    dockerfile_env,
    load_stack,
    memory_limit_bytes,
    parse_cpu,
    pod_env,
)

DOCKERFILE = """\
FROM python:3.11 AS build
ENV BUILD_ONLY=1
FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \\
    APP_ENV=production \\
    PORT=8000 # the container port
ENV MALLOC_MMAP_THRESHOLD_=131072
CMD ["gunicorn"]
"""


def test_dockerfile_env_reads_the_final_stage_and_skips_references() -> None:
    assert dockerfile_env(DOCKERFILE) == {
        "APP_ENV": "production",
        "PORT": "8000",
        "MALLOC_MMAP_THRESHOLD_": "131072",
    }


def test_pod_env_is_the_images_env_overlaid_with_the_stacks_settings(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE)
    config = load_stack("prod")

    env = pod_env(config, 3, dockerfile)

    assert env["MALLOC_MMAP_THRESHOLD_"] == "131072"  # from the image
    assert env["WEB_CONCURRENCY"] == "3"  # the count under test
    expected = settings_env(config.app, config.exposure)
    assert {k: v for k, v in env.items() if k != "WEB_CONCURRENCY"} == {
        **dockerfile_env(DOCKERFILE),
        **{k: v for k, v in expected.items() if k != "WEB_CONCURRENCY"},
    }


def test_the_memory_limit_follows_the_stacks_formula() -> None:
    config = load_stack("prod")

    assert (
        memory_limit_bytes(config, 3)
        == (config.app.memory_base_mi + 3 * config.app.memory_per_worker_mi) * MIB
    )


def test_cpu_quantities() -> None:
    assert (parse_cpu("500m"), parse_cpu("1"), parse_cpu("1.5")) == (0.5, 1.0, 1.5)
