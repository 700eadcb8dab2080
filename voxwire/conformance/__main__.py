"""``python -m voxwire.conformance --target host:port``: check a server against voxwire.v1.

Exit status: 0 when every case passes, is skipped, or is a listed known failure or flaky case
that failed; 1 when a case fails (or a known-failing case passes: shrink the list); 2 for bad
arguments or case files (a known-failing or known-flaky entry that names no case, a --json
path that cannot be written), or nothing to judge.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import os
import sys
from pathlib import Path

from rich.console import Console

from voxwire.call_headers import parse_header
from voxwire.conformance.casefile import CaseFileError, select
from voxwire.conformance.report import print_report, write_json
from voxwire.conformance.runner import SKIP, Options, load_cases, read_case_list, run_kit
from voxwire.conformance.signals import load_speech


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m voxwire.conformance",
        description="Check a server that claims voxwire.v1 against every promise of the "
        "contract (docs/contract.md).",
    )
    p.add_argument("--target", help="host:port of the server (plaintext gRPC)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--known-failing", type=Path, help="file of case ids not expected to pass yet")
    p.add_argument("--known-flaky", type=Path, help="file of case ids whose failures do not count")
    p.add_argument("--models", default="", help="comma-separated models to use, in this order")
    p.add_argument(
        "--cases",
        action="append",
        default=[],
        help="only case ids matching these globs (comma-separated, repeatable)",
    )
    p.add_argument("--case-file", action="append", type=Path, default=[], help="more case files")
    p.add_argument("--slow", action="store_true", help="also run cases that wait out long limits")
    p.add_argument("--max-wait", type=float, default=10.0, help="longest limit waited out (s)")
    p.add_argument("--parallel", type=int, default=4, help="streams run at once")
    p.add_argument("--timeout", type=float, default=20.0, help="deadline of one stream (s)")
    p.add_argument("--deadline", type=float, default=300.0, help="bound on the whole run (s)")
    p.add_argument(
        "--speech",
        type=Path,
        help="a 16-bit PCM WAV file sent wherever a case sends speech, for a model that does "
        "not recognise the kit's own (its speech should span 60%% of its length)",
    )
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument(
        "--header",
        action="append",
        default=[],
        help="'name: value' metadata on every call (repeatable), e.g. 'authorization: Bearer KEY'",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Comma-separated like --models (case ids have no commas), and repeatable.
    args.cases = [p.strip() for arg in args.cases for p in arg.split(",") if p.strip()]
    console = Console()
    errors = Console(stderr=True, soft_wrap=True)  # one line each, whatever the width

    def fail(text: str) -> None:
        # What it quotes (a case file's line, a server's message) is text, never rich markup.
        errors.print(text, style="red", markup=False, highlight=False)

    try:
        every = load_cases(args.case_file)
        cases = select(every, args.cases)
        known = read_case_list(args.known_failing) if args.known_failing else ()
        flaky = read_case_list(args.known_flaky) if args.known_flaky else ()
    except (CaseFileError, OSError) as exc:
        fail(str(exc))
        return 2
    for flag, entries in (("--known-failing", known), ("--known-flaky", flaky)):
        # A typo, or a case renamed since, would never match: the list could not shrink, and
        # the case it meant would not be listed at all.
        stale = [e for e in entries if not any(fnmatch.fnmatchcase(c.id, e) for c in every)]
        if stale:
            fail(
                f"{flag} names no case: {', '.join(stale)} (python -m voxwire.conformance "
                "--list shows the ids)"
            )
            return 2
    if not cases:
        # A typo in a CI job's --cases must not pass as "conforms".
        fail(f"no case matches --cases {' '.join(args.cases)}")
        return 2
    if args.list:
        # One line per case whatever the width, so that grep and wc work on it.
        for case in cases:
            line = f"{case.id:48} {case.section:28} {case.promise}"
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        return 0
    if not args.target:
        fail("--target host:port is required")
        return 2
    if args.json and not _writable(args.json):
        # Found after the run, it was a traceback and exit 1, as if a case had failed.
        fail(f"--json {args.json}: cannot write there")
        return 2
    try:
        extra = tuple(parse_header(h) for h in args.header)
        if args.speech:
            load_speech(args.speech)
    except ValueError as exc:
        what = "--speech: " if args.speech and str(args.speech) in str(exc) else ""
        fail(f"{what}{exc}")
        return 2
    options = Options(
        target=args.target,
        headers=extra,
        models=tuple(m for m in args.models.split(",") if m),
        known_failing=known,
        known_flaky=flaky,
        slow=args.slow,
        max_wait_s=args.max_wait,
        parallel=max(1, args.parallel),
        deadline_s=args.deadline,
        case_timeout_s=args.timeout,
        speech=args.speech,
    )
    report = asyncio.run(run_kit(options, cases))
    unusable = report.unreachable
    if not unusable and not report.unknown_models:
        print_report(report, console)
    if args.json:
        try:
            write_json(report, args.json)
        except OSError as exc:
            fail(f"--json {args.json}: {exc}")
            return 2
    if unusable:
        # Not a verdict on a server: there is none to judge at that address (exit 2, not 1).
        fail(
            f"cannot check {args.target}: GetCapabilities failed: {report.catalog_error}"
            " (is a voxwire.v1 server listening there?)"
        )
        return 2
    unknown = report.unknown_models
    if unknown:
        # A typo here skipped every case that needs a model and still "conformed".
        fail(
            f"--models names what {args.target} does not serve: {', '.join(unknown)} "
            f"(it serves {', '.join(report.models) or 'no model'})"
        )
        return 2
    checked = sum(1 for r in report.results if r.result not in (SKIP,))
    if not checked:
        fail(
            f"nothing was checked: every selected case was skipped "
            f"({len(report.results)}; see the table for why)"
        )
        return 2
    return 0 if report.ok else 1


def _writable(path: Path) -> bool:
    """Whether the report can be written at ``path`` (its folder is made if need be)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    if path.exists():
        return path.is_file() and os.access(path, os.W_OK)
    return os.access(path.parent, os.W_OK)


if __name__ == "__main__":
    sys.exit(main())
