"""The outputs: sizing.json, sizing.csv, sizing.png and index.html are written and valid."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

from loadtests.sizing.report import table, write_all
from loadtests.sizing.select import Objective, Recommendation, Step, recommend

STEPS = [
    Step(1, 310.4, 40, 180, 260, 0, requests=6208, cpu_util=0.98),
    Step(2, 395.2, 30, 120, 190, 0, requests=7904, cpu_util=0.97, stores_cpu=0.35, other_cpu=0.05),
    Step(3, 401.0, 31, 250, 400, 4, rate_limited=2, requests=8020, cpu_util=None),
]
SETTINGS = {"p95_objective_ms": 200.0, "users": 32, "command": "python -m loadtests.sizing <x>"}


def test_every_output_is_written_and_valid(tmp_path: Path) -> None:
    rec = recommend(STEPS, Objective(p95_ms=200))

    paths = write_all(tmp_path / "out", STEPS, rec, SETTINGS)

    document = json.loads(paths["json"].read_text())
    assert document["recommended_workers"] == 2
    assert document["hpa_cpu_target"] == 78
    assert document["capacity_rps"] == 395.2
    assert document["settings"] == SETTINGS
    first = {"workers": 1, "rps": 310.4, "p50_ms": 40, "p95_ms": 180, "p99_ms": 260, "failures": 0}
    assert first.items() <= document["steps"][0].items()
    assert [s["workers"] for s in document["steps"]] == [1, 2, 3]

    with paths["csv"].open() as handle:
        recorded = list(csv.DictReader(handle))
    assert [r["rps"] for r in recorded] == ["310.4", "395.2", "401.0"]
    assert recorded[2]["cpu_util"] == ""

    png = paths["png"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000

    page = paths["html"].read_text()
    HTMLParser().feed(page)  # parses
    assert page.count("<tr>") == 4
    assert '<img src="sizing.png"' in page
    assert "Recommended workers: 2." in page
    assert "&lt;x&gt;" in page  # settings are escaped


def test_a_run_without_a_recommendation_still_reports(tmp_path: Path) -> None:
    rec = Recommendation(None, "no worker count meets p95 <= 10 ms with zero failures (...)")

    paths = write_all(tmp_path, STEPS, rec, SETTINGS)

    assert json.loads(paths["json"].read_text())["recommended_workers"] is None
    assert "No recommendation: no worker count meets" in paths["html"].read_text()
    assert paths["png"].stat().st_size > 0


def test_table_marks_the_recommended_row() -> None:
    lines = table(STEPS, recommended=2).splitlines()

    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "workers", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures", "429s", "requests",
        "server CPU", "Locust CPU", "PG+Redis CPUs", "other CPUs",
    ]  # fmt: skip
    assert [c.strip() for c in lines[3].strip("|").split("|")] == [
        "2*", "395", "30", "120", "190", "0", "0", "7904", "97%", "-", "0.35", "0.05",
    ]  # fmt: skip
    assert lines[4].split("|")[9].strip() == "-"
