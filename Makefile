# The project's stable interface: docs, CI and later work call these targets, never the tools
# directly. Every target creates or reuses the virtual environment itself, so on a fresh machine
# with Python 3.11+ `make run` and `make test` are the only set-up commands.
PYTHON      ?= python3
UV_VERSION  := 0.13.9
TOOLS       := .tools
UV          := $(TOOLS)/bin/uv
VENV        := .venv
PY          := $(VENV)/bin/python
STACK       ?= dev
STACKS      := $(patsubst Pulumi.%.yaml,%,$(wildcard Pulumi.*.yaml))
K8S_VERSIONS ?= 1.32.0 1.33.0 1.34.0 1.35.0
CHECKOV_VERSION := 3.2.497

# uv never downloads an interpreter: it uses the Python 3.11+ found on the machine.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

.DEFAULT_GOAL := help
.PHONY: help venv run serve migrate test lint fmt render render-all validate-manifests size benchmark e2e clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Re-synced whenever the lock changes; --frozen installs exactly what uv.lock pins.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	@touch $@

venv: $(VENV)/.synced ## Create or update the virtual environment from uv.lock

run: venv ## Serve on embedded defaults (SQLite, in-memory limits) at http://127.0.0.1:$${PORT:-8000}
	$(PY) -m service run

serve: venv ## Production server: Gunicorn + Uvicorn workers (WEB_CONCURRENCY workers, port PORT)
	@# jemalloc as in the image (Dockerfile), when this machine has Debian's libjemalloc2
	LD_PRELOAD="$$(ls /usr/lib/$$(uname -m)-linux-gnu/libjemalloc.so.2 2>/dev/null)" \
		$(VENV)/bin/gunicorn --config python:service.gunicorn_conf 'service.main:create_app()'

migrate: venv ## Apply database migrations and create the first admin (the Kubernetes Job runs this too)
	$(PY) -m service migrate

test: venv ## Run the test suite (needs PostgreSQL and Redis on 127.0.0.1)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv ## ruff, mypy, hadolint, actionlint, checkov (Dockerfile, workflows)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy service infra loadtests tests benchmarks
	$(VENV)/bin/hadolint Dockerfile
	@if ls .github/workflows/*.yml >/dev/null 2>&1; then $(VENV)/bin/actionlint .github/workflows/*.yml; fi
	$(UV) tool run --quiet --from checkov==$(CHECKOV_VERSION) checkov --quiet --compact --skip-download \
		--framework dockerfile github_actions -d . --skip-path .venv --skip-path .tools --skip-path build

fmt: venv ## Format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

render: venv ## Write STACK's Kubernetes objects as YAML under build/manifests/STACK/
	$(PY) -m infra.render $(STACK)

# Every stack, plus dev with the in-cluster Locust enabled (off in every stack file; one replica,
# as its per-pod target requires) so the validators cover the load-test objects too.
render-all: venv ## Render every stack that has a Pulumi.<stack>.yaml (and dev with Locust on)
	@for s in $(STACKS); do $(PY) -m infra.render $$s || exit 1; done
	$(PY) -m infra.render dev --set loadtestEnabled=true --set minReplicas=1 --set maxReplicas=1 --out build/manifests/dev-loadtest

validate-manifests: render-all ## kubernetes-validate --strict (each supported version) and checkov on every rendering
	@for d in build/manifests/*/; do for v in $(K8S_VERSIONS); do \
		$(VENV)/bin/kubernetes-validate --strict --quiet -k $$v $$d*.yaml || exit 1; \
		done; echo "kubernetes-validate: $$d clean for $(K8S_VERSIONS)"; done
	$(UV) tool run --quiet --from checkov==$(CHECKOV_VERSION) checkov --quiet --compact --skip-download \
		--framework kubernetes -d build/manifests --config-file infra/checkov.yaml

size: venv ## Measure the stack pod per worker count (open-loop Locust, cgroup limits) and recommend (ARGS="--help")
	$(PY) -m loadtests.sizing $(ARGS)

benchmark: venv ## wrk benchmarks of the full stack against the floor app (see docs/benchmarks.md)
	$(PY) -m benchmarks.run $(ARGS)

e2e: venv ## End to end on a throwaway kind cluster (needs docker, kind, kubectl, pulumi; E2E_KEEP=1 keeps it)
	$(PY) -m e2e.run

clean: ## Remove build output and caches (keeps the virtual environment)
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
