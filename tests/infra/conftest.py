"""Mocked runs of the real program with the real Pulumi.<stack>.yaml files (no CLI, no cluster)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import pytest

from infra import harness
from infra.harness import Recorded

STACKS = ("dev", "staging", "prod")
Obj = dict[str, Any]


@cache
def _run(stack: str, overrides: tuple[tuple[str, str], ...] = ()) -> list[Recorded]:
    return harness.run(stack, dict(overrides))


def run(stack: str, **overrides: str) -> list[Recorded]:
    """A cached mocked run; the recorded objects are shared, so tests must not mutate them."""
    return _run(stack, tuple(sorted(overrides.items())))


def objects(stack: str, **overrides: str) -> list[Obj]:
    """The Kubernetes objects with real (mocked) secret values, for assertions."""
    return harness.kubernetes_objects(run(stack, **overrides), secret=None)


def find(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    matches = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def pod_spec(obj: Obj) -> Obj:
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


def container(obj: Obj, index: int = 0) -> Obj:
    c: Obj = pod_spec(obj)["containers"][index]
    return c


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def objs(stack: str) -> list[Obj]:
    return objects(stack)


@pytest.fixture
def get(objs: list[Obj]) -> Callable[..., Obj]:
    return lambda kind, name=None: find(objs, kind, name)
