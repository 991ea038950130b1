"""The end-to-end script's own logic (e2e/run.py), here against a real server; the cluster steps
need docker, kind and pulumi, which only the E2E workflow (or a laptop) has."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import yaml

from e2e import run as e2e
from tests.support.databases import REDIS_URL, create_database, drop_database, migrate
from tests.support.processes import Server, free_port, start_server

ADMIN_PASSWORD = "e2e admin passphrase 0123"


def test_kind_config_maps_the_ingress_ports_and_reads_registry_hosts() -> None:
    config = yaml.safe_load(e2e.kind_config())
    (node,) = config["nodes"]
    assert {(m["containerPort"], m["hostPort"]) for m in node["extraPortMappings"]} == {
        (80, 80),
        (443, 443),
    }
    assert 'config_path = "/etc/containerd/certs.d"' in config["containerdConfigPatches"][0]
    assert "ingress-ready=true" in node["kubeadmConfigPatches"][0]
    assert e2e.registry_hosts_toml() == '[host."http://kind-registry:5000"]\n'


def test_the_e2e_stack_is_the_scripts() -> None:
    stack = yaml.safe_load((e2e.ROOT / "Pulumi.e2e.yaml").read_text())["config"]
    assert stack["blueprint:namespace"] == e2e.NAMESPACE
    assert f"http://{stack['blueprint:host']}" == e2e.BASE_URL
    assert stack["blueprint:firstAdminEmail"] == e2e.ADMIN_EMAIL
    assert stack["blueprint:registry"] == f"localhost:{e2e.REGISTRY_PORT}"
    assert stack["blueprint:postgresProtect"] is False  # destroyed by every run


def test_missing_tools_are_named() -> None:
    assert e2e.missing_tools(lambda tool: None if tool in ("kind", "pulumi") else "/x") == [
        "kind",
        "pulumi",
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    import asyncio

    name, url = asyncio.run(create_database("e2e"))
    migrate(url, FIRST_ADMIN_EMAIL=e2e.ADMIN_EMAIL, FIRST_ADMIN_PASSWORD=ADMIN_PASSWORD)
    running = start_server(
        {
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "APP_NAME": f"e2e-{uuid.uuid4().hex[:8]}",  # its own rate-limit keys
        },
        tmp_path_factory.mktemp("e2e"),
    )
    try:
        yield running
    finally:
        running.stop()
        asyncio.run(drop_database(name))


def test_smoke_then_load_against_the_real_service(server: Server) -> None:
    # One test: the login limit (per client address) is shared by everything here.
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        with pytest.raises(AssertionError, match="login: 401"):
            e2e.smoke(client, "not the password")
        token = e2e.smoke(client, ADMIN_PASSWORD)
    assert token.count(".") == 2  # a JWT
    load = e2e.Load(lambda: httpx.Client(base_url=server.base_url, timeout=10), token, pause=0.1)
    with load:
        time.sleep(1.5)
    assert "requests during the rollout" in e2e.verdict(load)
    assert load.failed == 0
    assert load.outcomes["200"] > 0


def test_the_load_verdict_fails_on_any_failed_request() -> None:
    gone = f"http://127.0.0.1:{free_port()}"
    load = e2e.Load(lambda: httpx.Client(base_url=gone, timeout=1), "token", pause=0.1)
    with load:
        time.sleep(0.5)
    with pytest.raises(AssertionError, match="failed"):
        e2e.verdict(load)
