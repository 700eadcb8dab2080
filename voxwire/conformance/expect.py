"""The expectations every case can declare: status, rich error, first/last responses, context
errors, finished contexts, update acks. Checked in that order, after the case's waits (a wait
that never ended explains the rest); the first failure is the case's evidence. Property checks
(verdict.PROPERTIES) follow.
"""

from __future__ import annotations

from collections import Counter

from voxwire.conformance import richstatus
from voxwire.conformance.driver import Outcome
from voxwire.conformance.plan import Plan
from voxwire.conformance.verdict import PROPERTIES, Verdict, failed, passed


def evaluate(out: Outcome, plan: Plan) -> Verdict:
    """The case's verdict on ``out``."""
    expect = plan.case.expect
    # A wait that never ended is the cause of what follows it (the deadline, or the server's
    # idle timeout while the kit waited), so it comes first.
    checks = (
        _waits,
        _ended,
        _status,
        _rich_error,
        _first_last,
        _context_errors,
        _done,
        _update_acks,
    )
    for check in checks:
        verdict = check(out, plan)
        if verdict is not None:
            return verdict
    evidence = summary(out)
    for name in expect.properties:
        verdict = PROPERTIES[name](out, plan)
        if not verdict.ok:
            return verdict
        evidence = verdict.evidence
    return passed(evidence)


def summary(out: Outcome) -> str:
    """``OK: started, 3 result, summary`` or the rich error of a failed stream."""
    if out.code.name != "OK":
        rich = richstatus.from_trailers(out.trailers)
        if isinstance(rich, richstatus.RichError):
            return (
                rich.describe() if rich.code is out.code else f"{out.code.name} ({rich.describe()})"
            )
        return f"{out.code.name} ({rich})"
    counts = Counter(labels(out))
    listed = ", ".join(f"{n} {k}" if n > 1 else k for k, n in counts.items())
    return f"OK: {listed or 'no responses'}"


def labels(out: Outcome, context: str | None = None) -> list[str]:
    """The response kinds, an in-band error with its reason and message ("error
    UNSUPPORTED_SAMPLE_RATE: 22050 Hz only"): a bare "error" does not say what to fix."""
    out_labels = []
    for r in out.responses:
        if context is not None and r.context_id != context:
            continue
        kind = r.WhichOneof("response")
        if kind == "error":
            rich = richstatus.from_proto(r.error.error)
            message = r.error.error.message
            kind = f"error {rich.reason or 'without reason'}" + (
                f": {message[:80]}" if message else ""
            )
        out_labels.append(kind)
    return out_labels


def _seen(out: Outcome) -> str:
    counts = Counter(labels(out))
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "no responses"


def _ended(out: Outcome, plan: Plan) -> Verdict | None:
    if out.deadline_hit:
        return failed(f"the stream did not end within {out.elapsed_s:.1f} s ({_seen(out)})")
    return None


def _status(out: Outcome, plan: Plan) -> Verdict | None:
    want = plan.case.expect.status
    if out.code.name == want:
        return None
    details = f" ({out.details})" if out.details else ""
    return failed(f"ended {summary(out)}{details}, expected {want}; saw {_seen(out)}")


def _waits(out: Outcome, plan: Plan) -> Verdict | None:
    if out.missed_wait:
        ended = "the kit's deadline ended it" if out.deadline_hit else f"it ended {summary(out)}"
        return failed(f"no {out.missed_wait} came (saw {_seen(out)}; {ended})")
    return None


def _rich_error(out: Outcome, plan: Plan) -> Verdict | None:
    expect = plan.case.expect
    if not expect.reason:
        return None
    rich = richstatus.from_trailers(out.trailers)
    if isinstance(rich, str):
        return failed(f"{out.code.name} but {rich}")
    if rich.code is not out.code:
        name = rich.code.name if rich.code else "?"
        return failed(f"status {out.code.name} but its details say {name}")
    problem = richstatus.check_against_contract(rich, expect.reason, expect.violations)
    return failed(problem) if problem else None


def _first_last(out: Outcome, plan: Plan) -> Verdict | None:
    expect = plan.case.expect
    kinds = out.kinds()
    if expect.first and (not kinds or kinds[0] != expect.first):
        return failed(f"first response {kinds[0] if kinds else 'none'}, expected {expect.first}")
    if expect.last and (not kinds or kinds[-1] != expect.last):
        return failed(f"last response {kinds[-1] if kinds else 'none'}, expected {expect.last}")
    return None


def _context_errors(out: Outcome, plan: Plan) -> Verdict | None:
    expect = plan.case.expect
    for cid, reason in expect.context_errors.items():
        errors = out.of("error", cid)
        if len(errors) != 1:
            return failed(
                f"{len(errors)} ContextError for {cid!r}, expected one {reason} "
                f"({', '.join(labels(out, cid)) or 'no responses'})"
            )
        index, error = errors[0]
        rich = richstatus.from_proto(error.error)
        wanted = () if expect.reason else expect.violations
        problem = richstatus.check_against_contract(rich, reason, wanted)
        if problem:
            return failed(f"context {cid!r}: {problem}")
        after = [k for k in out.kinds(cid)[_position(out, cid, index) + 1 :] if k != "error"]
        reopened = any(s.label == f"open {cid}" for m, s in out.marks if m > index)
        if after and not reopened:
            return failed(f"{after[0]} for context {cid!r} after its ContextError")
    return None


def _position(out: Outcome, cid: str, index: int) -> int:
    """Position of response ``index`` among the responses for ``cid``."""
    return sum(1 for r in out.responses[:index] if r.context_id == cid)


def _done(out: Outcome, plan: Plan) -> Verdict | None:
    for cid in plan.case.expect.done:
        if not out.of("done", cid):
            seen = ", ".join(labels(out, cid)) or "no responses"
            return failed(f"context {cid!r} never got ContextDone ({seen})")
    return None


def _update_acks(out: Outcome, plan: Plan) -> Verdict | None:
    for update_id, want in plan.case.expect.update_acks.items():
        acks = [a for _, a in out.of("update_config_ack") if a.update_id == update_id]
        if len(acks) != 1:
            return failed(f"{len(acks)} UpdateConfigAck for {update_id!r}, expected one")
        ack = acks[0]
        if want == "accepted":
            if not ack.accepted:
                rich = richstatus.from_proto(ack.error)
                return failed(
                    f"update {update_id!r} rejected ({rich.describe()}), expected accepted"
                )
            continue
        if ack.accepted:
            return failed(f"update {update_id!r} accepted, expected rejected with {want}")
        rich = richstatus.from_proto(ack.error)
        problem = richstatus.check_against_contract(rich, want)
        if problem:
            return failed(f"update {update_id!r}: {problem}")
        if want == "INVALID_CONFIG" and not rich.violations:
            return failed(f"update {update_id!r} rejected without field violations")
    return None
