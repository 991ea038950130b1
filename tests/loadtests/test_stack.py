"""The measured pod's environment: the Dockerfile's ENV under the stack's settings_env."""

from __future__ import annotations

from pathlib import Path

from infra.components.app import settings_env
from loadtests.sizing.stack import (
    MIB,
    dockerfile_env,
    load_stack,
    memory_limit_bytes,
    on_this_machine,
    parse_cpu,
    pod_env,
    preloads_here,
)

DOCKERFILE = """\
FROM python:3.11 AS build
ENV BUILD_ONLY=1
FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \\
    APP_ENV=production \\
    PORT=8000 # the container port
ENV LD_PRELOAD=/usr/local/lib/libjemalloc.so.2
CMD ["gunicorn"]
"""


def test_dockerfile_env_reads_the_final_stage_and_skips_references() -> None:
    assert dockerfile_env(DOCKERFILE) == {
        "APP_ENV": "production",
        "PORT": "8000",
        "LD_PRELOAD": "/usr/local/lib/libjemalloc.so.2",
    }


def test_pod_env_is_the_images_env_overlaid_with_the_stacks_settings(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE)
    config = load_stack("prod")

    env = pod_env(config, 3, dockerfile)

    assert env["APP_ENV"] == "production"  # from the image
    assert env["WEB_CONCURRENCY"] == "3"  # the count under test
    expected = settings_env(config.app, config.exposure)
    assert {k: v for k, v in env.items() if k != "WEB_CONCURRENCY"} == {
        **on_this_machine(dockerfile_env(DOCKERFILE)),
        **{k: v for k, v in expected.items() if k != "WEB_CONCURRENCY"},
    }


def test_the_images_preload_becomes_this_machines_copy_of_the_library(tmp_path: Path) -> None:
    debian = tmp_path / "x86_64-linux-gnu"
    debian.mkdir()
    (debian / "libjemalloc.so.2").write_bytes(b"")
    image = {"APP_ENV": "production", "LD_PRELOAD": "/usr/local/lib/libjemalloc.so.2"}

    assert on_this_machine(image, [tmp_path / "lib", debian]) == {
        "APP_ENV": "production",
        "LD_PRELOAD": str(debian / "libjemalloc.so.2"),
    }
    assert preloads_here(image["LD_PRELOAD"], [debian]) == ([str(debian / "libjemalloc.so.2")], [])


def test_a_preload_this_machine_lacks_is_left_out_and_named(tmp_path: Path) -> None:
    image = {"APP_ENV": "production", "LD_PRELOAD": "/usr/local/lib/libjemalloc.so.2"}

    # ld.so would print an error for every process, and glibc's malloc serves anyway.
    assert on_this_machine(image, [tmp_path]) == {"APP_ENV": "production"}
    assert preloads_here(image["LD_PRELOAD"], [tmp_path]) == ([], ["libjemalloc.so.2"])


def test_the_memory_limit_follows_the_stacks_formula() -> None:
    config = load_stack("prod")

    assert (
        memory_limit_bytes(config, 3)
        == (config.app.memory_base_mi + 3 * config.app.memory_per_worker_mi) * MIB
    )


def test_cpu_quantities() -> None:
    assert (parse_cpu("500m"), parse_cpu("1"), parse_cpu("1.5")) == (0.5, 1.0, 1.5)
