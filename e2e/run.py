"""End to end on a real cluster: kind + local registry + ingress-nginx + metrics-server, the real
Pulumi engine on a local backend, the `e2e` stack (Pulumi.e2e.yaml). `make e2e` runs this; so
does the E2E workflow. Needs docker, kind, kubectl and pulumi on PATH.

  1. a kind cluster with kind's local registry (localhost:5001) and the add-ons, pinned
  2. build and push the image; `pulumi up` the e2e stack with it (by digest)
  3. smoke tests through the ingress: liveness, login, /users/me, a 429 on repeated logins
  4. `pulumi up --expect-no-changes`: the program is idempotent
  5. a new image and `up` again while a load runs: the migration Job reruns, no request fails
  6. `pulumi destroy`, then the cluster and registry go (E2E_KEEP=1 keeps them)

The steps that need a cluster are thin calls of the tools; the logic (the kind config, the
smoke checks, the load and its verdict) is in plain functions that tests/infra/test_e2e.py
runs here against a real server.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
STACK = "e2e"
CLUSTER = "blueprint-e2e"
NAMESPACE = "blueprint-e2e"
REGISTRY_NAME, REGISTRY_PORT = "kind-registry", 5001
BASE_URL = "http://blueprint.localtest.me"  # Pulumi.e2e.yaml's host; kind maps port 80 here
ADMIN_EMAIL = "admin@example.com"
# Pinned add-ons (bump deliberately, like the actions): the kind provider's ingress-nginx
# manifest and metrics-server's release manifest.
INGRESS_NGINX = (
    "https://raw.githubusercontent.com/kubernetes/ingress-nginx/"
    "controller-v1.12.1/deploy/static/provider/kind/deploy.yaml"
)
METRICS_SERVER = (
    "https://github.com/kubernetes-sigs/metrics-server/releases/download/v0.7.2/components.yaml"
)
REGISTRY_IMAGE = "registry:2.8.3"
TOOLS = ("docker", "kind", "kubectl", "pulumi")


def kind_config() -> str:
    """One control-plane node with ports 80/443 on the host (kind's ingress set-up) and
    containerd reading registry hosts from /etc/containerd/certs.d (kind's local registry)."""
    return f"""kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: {CLUSTER}
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
nodes:
  - role: control-plane
    kubeadmConfigPatches:
      - |
        kind: InitConfiguration
        nodeRegistration:
          kubeletExtraArgs:
            node-labels: "ingress-ready=true"
    extraPortMappings:
      - containerPort: 80
        hostPort: 80
        protocol: TCP
      - containerPort: 443
        hostPort: 443
        protocol: TCP
"""


def registry_hosts_toml() -> str:
    """What a node resolves localhost:5001 to: the registry container on kind's network."""
    return f'[host."http://{REGISTRY_NAME}:5000"]\n'


def missing_tools(which: object = shutil.which) -> list[str]:
    return [tool for tool in TOOLS if not which(tool)]  # type: ignore[operator]


def sh(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    print("+", " ".join(args), flush=True)
    result = subprocess.run(
        args, cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


# --- smoke checks: plain HTTP against any base URL ----------------------------------------------


def login(client: httpx.Client, email: str, password: str) -> httpx.Response:
    return client.post("/api/v1/auth/token", data={"username": email, "password": password})


def smoke(client: httpx.Client, admin_password: str) -> str:
    """Liveness, a login, /users/me, then repeated bad logins until a 429; returns the token."""
    assert client.get("/health/live").status_code == 200, "liveness"
    response = login(client, ADMIN_EMAIL, admin_password)
    assert response.status_code == 200, f"login: {response.status_code} {response.text}"
    token = str(response.json()["access_token"])
    me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, f"/users/me: {me.status_code} {me.text}"
    assert me.json()["email"] == ADMIN_EMAIL
    statuses = [login(client, "nobody@example.com", "wrong").status_code for _ in range(20)]
    assert 429 in statuses, f"no 429 after 20 bad logins: {statuses}"
    limited = login(client, "nobody@example.com", "wrong")
    assert limited.headers["content-type"].startswith("application/problem+json")
    assert "retry-after" in limited.headers
    return token


# --- load during a rollout ----------------------------------------------------------------------


@dataclass
class Load:
    """Authenticated GETs of /users/me from a few threads until stopped; counts outcomes."""

    client_factory: object  # () -> httpx.Client
    token: str
    threads: int = 2
    pause: float = 0.4  # per thread: well under the per-user limit (RATE_LIMIT_USER)
    outcomes: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _loop(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with self.client_factory() as client:  # type: ignore[operator]
            while not self._stop.is_set():
                try:
                    outcome = str(client.get("/api/v1/users/me", headers=headers).status_code)
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                with self._lock:
                    self.outcomes[outcome] += 1
                time.sleep(self.pause)

    def __enter__(self) -> Load:
        self._workers = [threading.Thread(target=self._loop) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join()

    @property
    def failed(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome != "200")


def verdict(load: Load) -> str:
    """The load's summary; raises when any request failed or none was made."""
    total = sum(load.outcomes.values())
    summary = f"{total} requests during the rollout: {dict(load.outcomes)}"
    if total == 0 or load.failed:
        raise AssertionError(f"{summary}; {load.failed} failed")
    return summary


# --- the cluster steps --------------------------------------------------------------------------


def create_cluster(workdir: Path) -> None:
    running = sh("docker", "ps", "-aq", "-f", f"name=^{REGISTRY_NAME}$").strip()
    if not running:
        sh(
            "docker", "run", "-d", "--restart=always", "--name", REGISTRY_NAME,
            "-p", f"127.0.0.1:{REGISTRY_PORT}:5000", REGISTRY_IMAGE,
        )  # fmt: skip
    config = workdir / "kind.yaml"
    config.write_text(kind_config())
    sh("kind", "create", "cluster", "--config", str(config), "--wait", "120s")
    hosts_dir = f"/etc/containerd/certs.d/localhost:{REGISTRY_PORT}"
    for node in sh("kind", "get", "nodes", "--name", CLUSTER).split():
        sh("docker", "exec", node, "mkdir", "-p", hosts_dir)
        sh("docker", "exec", "-i", node, "cp", "/dev/stdin", f"{hosts_dir}/hosts.toml",
           stdin=registry_hosts_toml())  # fmt: skip
    subprocess.run(["docker", "network", "connect", "kind", REGISTRY_NAME], check=False)
    context = f"kind-{CLUSTER}"
    sh("kubectl", "--context", context, "apply", "-f", INGRESS_NGINX)
    sh("kubectl", "--context", context, "apply", "-f", METRICS_SERVER)
    # kind's kubelets serve self-signed certificates.
    sh(
        "kubectl", "--context", context, "-n", "kube-system", "patch", "deployment",
        "metrics-server", "--type=json", "-p",
        '[{"op":"add","path":"/spec/template/spec/containers/0/args/-",'
        '"value":"--kubelet-insecure-tls"}]',
    )  # fmt: skip
    sh(
        "kubectl", "--context", context, "-n", "ingress-nginx", "wait", "--for=condition=ready",
        "pod", "-l", "app.kubernetes.io/component=controller", "--timeout=300s",
    )  # fmt: skip


def push_image(round_: int) -> str:
    """Build, push to the kind registry, return the pushed reference by digest."""
    tag = f"localhost:{REGISTRY_PORT}/blueprint:e2e-{round_}"
    # A label per round: a new digest, as a new release would have.
    sh("docker", "build", "--label", f"e2e.round={round_}", "-t", tag, ".")
    sh("docker", "push", tag)
    return sh("docker", "inspect", "--format", "{{index .RepoDigests 0}}", tag).strip()


def pulumi(env: dict[str, str], *args: str) -> str:
    return sh("pulumi", *args, "--stack", STACK, "--non-interactive", env=env)


def admin_password(context: str) -> str:
    encoded = sh(
        "kubectl", "--context", context, "-n", NAMESPACE, "get", "secret", "api-secrets",
        "-o", "jsonpath={.data.FIRST_ADMIN_PASSWORD}",
    )  # fmt: skip
    return base64.b64decode(encoded).decode()


def migration_images(context: str) -> set[str]:
    out = sh(
        "kubectl", "--context", context, "-n", NAMESPACE, "get", "jobs",
        "-l", "app.kubernetes.io/component=migrate", "-o", "json",
    )  # fmt: skip
    return {
        c["image"]
        for job in json.loads(out)["items"]
        for c in job["spec"]["template"]["spec"]["containers"]
    }


def main() -> int:
    if missing := missing_tools():
        print(f"e2e needs {', '.join(missing)} on PATH (docs/deployment.md, 'End to end')")
        return 2
    context = f"kind-{CLUSTER}"
    workdir = Path(tempfile.mkdtemp(prefix="blueprint-e2e-"))
    env = os.environ | {
        "PULUMI_BACKEND_URL": f"file://{workdir}",
        "PULUMI_CONFIG_PASSPHRASE": os.environ.get("PULUMI_CONFIG_PASSPHRASE", "e2e-only"),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }
    keep = os.environ.get("E2E_KEEP") == "1"
    # `stack init` and `config set` write to the stack file; the run puts it back as it was.
    stack_file = ROOT / f"Pulumi.{STACK}.yaml"
    committed = stack_file.read_text()
    up = False
    try:
        create_cluster(workdir)
        pulumi(env, "stack", "init", "--secrets-provider", "passphrase")
        pulumi(env, "config", "set", "blueprint:kubeContext", context)
        pulumi(env, "config", "set", "blueprint:image", push_image(1))
        pulumi(env, "up", "--yes", "--skip-preview")
        up = True
        client = lambda: httpx.Client(base_url=BASE_URL, timeout=10)  # noqa: E731
        with client() as http:
            token = smoke(http, admin_password(context))
        print("smoke: ok")
        pulumi(env, "up", "--yes", "--expect-no-changes")
        print("idempotent: ok")
        image = push_image(2)
        pulumi(env, "config", "set", "blueprint:image", image)
        with Load(client, token) as load:
            pulumi(env, "up", "--yes", "--skip-preview")
        print(verdict(load))
        assert migration_images(context) == {image}, "the migration Job did not rerun"
        print("rollout: ok")
        return 0
    finally:
        if up and not keep:
            pulumi(env, "destroy", "--yes", "--skip-preview")
            pulumi(env, "stack", "rm", "--yes")
        if not keep:
            subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], check=False)
            subprocess.run(["docker", "rm", "-f", REGISTRY_NAME], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
        stack_file.write_text(committed)


if __name__ == "__main__":
    sys.exit(main())
