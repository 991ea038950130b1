"""Write a sizing result into the stack it measured: refused unless the run can be trusted,
validated through infra.config (the connection budget included), atomic, with provenance.

The stack file is edited as text: only the lines of the keys written change (and the provenance
comment above `workers`), so comments, order and quoting elsewhere survive byte for byte.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.config import PROJECT, ConfigError
from loadtests.sizing.stack import REPO, StackError, config_values, parse_values, stack_file

PROVENANCE = "# sizing:"
ORDER = ("workers", "hpaCpuTarget", "memoryBaseMi", "memoryPerWorkerMi")


class ApplyRefused(RuntimeError):
    """The run cannot be written into the stack; the message says why."""


def refusals(report: Mapping[str, Any], stack: str) -> list[str]:
    """Every reason not to write this report into `stack` (empty: it may be written)."""
    reasons = []
    measured = report.get("settings", {}).get("stack")
    if measured != stack:
        reasons.append(f"the run measured stack {measured!r}, not {stack!r}")
    validity = report.get("validity", {})
    if not validity.get("valid_for_apply"):
        reasons += list(validity.get("reasons") or ["the run is not marked valid for --apply"])
    if report.get("recommendation", {}).get("workers") is None:
        reasons.append(
            "no worker count is recommended: "
            + str(report.get("recommendation", {}).get("reason", "none qualified"))
        )
    return reasons


def updates(report: Mapping[str, Any]) -> dict[str, int]:
    """The keys a report sets: workers, the memory budget, and the HPA target when derived."""
    rec = report["recommendation"]
    out = {"workers": int(rec["workers"])}
    if (target := report.get("hpa", {}).get("target")) is not None:
        out["hpaCpuTarget"] = int(target)
    memory = report.get("memory") or {}
    if memory.get("base_mi") and memory.get("per_worker_mi"):
        out["memoryBaseMi"] = int(memory["base_mi"])
        out["memoryPerWorkerMi"] = int(memory["per_worker_mi"])
    return out


def _line(name: str) -> re.Pattern[str]:
    return re.compile(rf"^(?P<indent>[ \t]+){re.escape(PROJECT)}:{name}:[ \t]*(?P<value>[^#\n]*?)"
                      rf"(?P<tail>[ \t]*#.*)?$", re.MULTILINE)  # fmt: skip


def edit(text: str, values: Mapping[str, int], provenance: str) -> str:
    """`text` with each key's value replaced (keeping its quoting), missing keys added after
    `workers`, and the provenance comment above `workers` replaced or added."""
    workers = _line("workers").search(text)
    if workers is None:
        raise StackError(f"the stack file has no {PROJECT}:workers line to edit")
    indent = workers.group("indent")
    added = []
    for name in ORDER:
        if name not in values:
            continue
        value = values[name]
        found = _line(name).search(text)
        if found is None:
            added.append(f"{indent}{PROJECT}:{name}: {value}")
            continue
        old = found.group("value").strip()
        new = (
            f'"{value}"'
            if old.startswith('"')
            else f"'{value}'"
            if old.startswith("'")
            else str(value)
        )
        line = f"{found.group('indent')}{PROJECT}:{name}: {new}{found.group('tail') or ''}"
        text = text[: found.start()] + line + text[found.end() :]
    workers = _line("workers").search(text)
    assert workers is not None
    if added:
        text = text[: workers.end()] + "\n" + "\n".join(added) + text[workers.end() :]
    before = text[: workers.start()]
    lines = before.split("\n")
    comment = f"{indent}{PROVENANCE} {provenance}"
    if len(lines) >= 2 and lines[-2].strip().startswith(PROVENANCE):
        lines[-2] = comment
    else:
        lines.insert(len(lines) - 1, comment)
    return "\n".join(lines) + text[workers.start() :]


def write_atomic(path: Path, text: str) -> None:
    """A temporary file in the same folder, flushed, then os.replace: readers see the old file
    or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Applied:
    path: Path
    diff: str
    written: bool


def apply(
    stack: str,
    report: Mapping[str, Any],
    provenance: str,
    *,
    root: Path = REPO,
    dry_run: bool = False,
) -> Applied:
    """Refuse (ApplyRefused) or write the report's values into Pulumi.<stack>.yaml."""
    if reasons := refusals(report, stack):
        raise ApplyRefused(f"nothing applied to stack {stack!r}: " + "; ".join(reasons))
    path = stack_file(stack, root)
    old = path.read_text(encoding="utf-8")
    new = edit(old, updates(report), provenance)
    try:
        parse_values(stack, config_values(new))
    except ConfigError as error:
        raise ApplyRefused(
            f"nothing applied to stack {stack!r}: infra.config refuses it: {error}"
        ) from None
    diff = "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), str(path), str(path)
        )
    )
    if not dry_run:
        write_atomic(path, new)
    return Applied(path, diff, not dry_run)
