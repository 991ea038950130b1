"""`python -m infra.render`: one YAML file per object, numbers normalised, secrets never real."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infra import harness, render


def test_one_file_per_object_in_apply_order(tmp_path: Path) -> None:
    assert render.main(["staging", "--out", str(tmp_path)]) == 0
    files = sorted(tmp_path.iterdir())
    expected = harness.kubernetes_objects(harness.run("staging"))
    assert [f.name for f in files] == [
        f"{i:02d}-{o['kind'].lower()}-{o['metadata']['name']}.yaml"
        for i, o in enumerate(expected, start=1)
    ]
    assert files[0].name == "01-namespace-blueprint-staging.yaml"
    text = "".join(f.read_text() for f in files)
    assert harness.PLACEHOLDER_SECRETS["databaseUrl"] not in text
    assert "generated-" not in text
    assert files[-1].name == f"{len(expected):02d}-ingress-api.yaml"
    (deployment_file,) = tmp_path.glob("*-deployment-api.yaml")
    deployment = yaml.safe_load(deployment_file.read_text())
    assert deployment["kind"] == "Deployment"
    port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert port == 8000
    assert type(port) is int  # the wire form's 8000.0, normalised


def test_a_rerender_replaces_stale_files(tmp_path: Path) -> None:
    (tmp_path / "99-stale.yaml").write_text("kind: Gone\n")
    assert render.main(["prod", "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "99-stale.yaml").exists()


def test_a_bad_config_fails_with_the_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert render.main(["dev", "--set", "workers=0", "--out", str(tmp_path)]) == 1
    assert "render dev: blueprint:workers: must be at least 1, got 0" in capsys.readouterr().err
    assert not tmp_path.joinpath("01-namespace-blueprint-dev.yaml").exists()
