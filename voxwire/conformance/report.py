"""The kit's output: a table for people (rich) and JSON for CI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from voxwire.conformance.runner import Report

_STYLES = {
    "pass": "green",
    "fail": "bold red",
    "error": "bold red",
    "unexpected-pass": "bold yellow",
    "known-failing": "yellow",
    "flaky": "yellow",
    "skip": "dim",
}


def table(report: Report) -> Table:
    # Evidence quotes what the server under test said (its messages, its reasons): text, never
    # rich markup (a "[/x]" in an error message ended the kit in a MarkupError).
    title = escape(f"voxwire.v1 conformance: {report.target}")
    out = Table(title=title, show_lines=False, expand=True)
    out.add_column("case / promise", ratio=3, overflow="fold")
    out.add_column("section", ratio=1, overflow="fold")
    out.add_column("result", no_wrap=True)
    out.add_column("evidence", ratio=3, overflow="fold")
    for r in report.results:
        style = _STYLES.get(r.result, "")
        out.add_row(
            f"[bold]{escape(r.case.id)}[/bold]\n{escape(r.case.promise)}",
            escape(r.case.section),
            f"[{style}]{r.result}[/{style}]",
            escape(r.evidence) + (f" [dim]({escape(r.model)})[/dim]" if r.model else ""),
        )
    return out


def print_report(report: Report, console: Console | None = None) -> None:
    console = console or Console()
    console.print(table(report))
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report.counts().items()))
    verdict = "[green]conforms[/green]" if report.ok else "[bold red]does not conform[/bold red]"
    console.print(f"{verdict}: {counts} in {report.duration_s:.1f} s")


def to_json(report: Report) -> dict[str, Any]:
    """The report for CI. A target where nothing answers voxwire.v1 is no verdict on a server
    (the CLI exits 2): "error" says why, and no case is listed as failed."""
    checked = [] if report.unreachable else report.results
    out: dict[str, Any] = {
        "target": report.target,
        "started_at": report.started_at,
        "duration_s": round(report.duration_s, 3),
        "ok": report.ok,
        "counts": {} if report.unreachable else report.counts(),
        "models": report.models,
    }
    if report.catalog_error:
        out["error"] = f"GetCapabilities failed: {report.catalog_error}"
    out["cases"] = [
        {
            "id": r.case.id,
            "promise": r.case.promise,
            "section": r.case.section,
            "service": r.case.service,
            "result": r.result,
            "evidence": r.evidence,
            "model": r.model,
            "duration_s": round(r.duration_s, 3),
            "attempts": r.attempts,
        }
        for r in checked
    ]
    return out


def write_json(report: Report, path: Path) -> None:
    """Raises OSError when ``path`` cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(report), indent=2) + "\n", encoding="utf-8")
