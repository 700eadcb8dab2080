"""Property checks of streaming transcription (docs/contract.md, "Streaming transcription").

Offsets are compared with what the kit had sent when a response arrived: the server cannot
have received more, so a result past it is "beyond the audio received". Millisecond values
get one millisecond of slack for rounding.
"""

from __future__ import annotations

from typing import Any

from voxwire.conformance.driver import Outcome
from voxwire.conformance.plan import Plan
from voxwire.conformance.signals import NOT_HEARD
from voxwire.conformance.verdict import Verdict, failed, passed, prop
from voxwire.v1 import stream_pb2

SLACK_MS = 1
SUSPECT = stream_pb2.StreamNotice.KIND_FORMAT_SUSPECT


def _results(out: Outcome) -> list[tuple[int, Any]]:
    return out.of("result")


@prop("stt_order")
def stt_order(out: Outcome, plan: Plan) -> Verdict:
    """started first and once; summary last and once; no result of an utterance after its
    final; utterance_end after its final."""
    kinds = out.kinds()
    if kinds.count("started") != 1 or kinds[0] != "started":
        return failed(f"started must come once and first; responses: {_head(kinds)}")
    if kinds.count("summary") != 1 or kinds[-1] != "summary":
        return failed(f"summary must come once and last; responses: {_tail(kinds)}")
    final_at: dict[str, int] = {}
    for index, result in _results(out):
        if result.utterance_id in final_at:
            what = "final" if result.is_final else "interim"
            return failed(
                f"{what} result of {result.utterance_id!r} after its final "
                f"(responses {final_at[result.utterance_id]} and {index})"
            )
        if result.is_final:
            final_at[result.utterance_id] = index
    for index, end in out.of("utterance_end"):
        at = final_at.get(end.utterance_id)
        if at is not None and at > index:
            return failed(f"utterance_end of {end.utterance_id!r} before its final")
    finals = len(final_at)
    return passed(f"started, {len(_results(out))} results ({finals} final), summary last")


@prop("interim_before_final")
def interim_before_final(out: Outcome, plan: Plan) -> Verdict:
    """With interim_results: interim results come, and each precedes its utterance's final."""
    results = [r for _, r in _results(out)]
    interims = [r for r in results if not r.is_final]
    if not interims:
        hint = "" if results else f"; {NOT_HEARD}"
        return failed(
            f"interim_results requested, no interim result in {len(results)} results{hint}"
        )
    finals = {r.utterance_id for r in results if r.is_final}
    seen_final: set[str] = set()
    for r in results:
        if not r.is_final and r.utterance_id in seen_final:
            return failed(f"interim of {r.utterance_id!r} after its final")
        if r.is_final:
            seen_final.add(r.utterance_id)
    orphans = {r.utterance_id for r in interims} - finals
    if orphans:
        return failed(f"interim results of {sorted(orphans)} never got a final")
    return passed(f"{len(interims)} interim before {len(finals)} final results, ids shared")


@prop("result_offsets")
def result_offsets(out: Outcome, plan: Plan) -> Verdict:
    """start_ms <= end_ms <= the audio sent when the result arrived."""
    results = _results(out)
    if not any(r.is_final for _, r in results):
        return failed(
            f"speech was sent, no final result came ({len(results)} results); {NOT_HEARD}"
        )
    for index, r in results:
        sent = out.audio_ms_before(index)
        if r.start_ms > r.end_ms:
            return failed(
                f"result {r.utterance_id!r} starts at {r.start_ms} ms after its end {r.end_ms}"
            )
        if r.end_ms > sent + SLACK_MS:
            return failed(
                f"result {r.utterance_id!r} ends at {r.end_ms} ms, only {sent} ms of audio sent"
            )
    last = results[-1][1]
    return passed(f"{len(results)} results within the audio sent (last ends {last.end_ms} ms)")


@prop("word_timings")
def word_timings(out: Outcome, plan: Plan) -> Verdict:
    """Final results carry words; each word's start <= end, starts and ends do not go back,
    and every word is inside its result."""
    finals = [r for _, r in _results(out) if r.is_final]
    words = sum(len(r.words) for r in finals)
    if not words:
        hint = "" if finals else f"; {NOT_HEARD}"
        return failed(
            f"word_timestamps requested, {len(finals)} final results carry no words{hint}"
        )
    for r in finals:
        prev_start = prev_end = 0
        for w in r.words:
            if w.start_ms > w.end_ms:
                return failed(f"word {w.word!r} starts at {w.start_ms} ms after its end {w.end_ms}")
            if w.start_ms < prev_start or w.end_ms < prev_end:
                return failed(
                    f"word {w.word!r} at {w.start_ms}-{w.end_ms} ms goes back before the "
                    f"previous word ({prev_start}-{prev_end} ms)"
                )
            if w.start_ms < r.start_ms or w.end_ms > r.end_ms:
                return failed(
                    f"word {w.word!r} at {w.start_ms}-{w.end_ms} ms outside its result "
                    f"{r.start_ms}-{r.end_ms} ms"
                )
            prev_start, prev_end = w.start_ms, w.end_ms
    return passed(f"{words} words in {len(finals)} finals, monotonic and inside their results")


@prop("finalize_ack")
def finalize_ack(out: Outcome, plan: Plan) -> Verdict:
    """Each finalize is acked once with its id and the audio ms sent before it; speech pending
    at the finalize becomes a final with from_finalize before the ack; nothing of that
    utterance follows the ack."""
    finalizes = [(m, s) for m, s in out.marks if s.label.startswith("finalize ")]
    if not finalizes:
        return failed("the case sent no finalize")
    evidence = []
    for mark, send in finalizes:
        fid = send.label.removeprefix("finalize ")
        acks = [(i, a) for i, a in out.of("finalize_ack") if a.finalize_id == fid]
        if len(acks) != 1:
            return failed(f"{len(acks)} FinalizeAck for {fid!r}, expected one")
        index, ack = acks[0]
        if index < mark:
            return failed(f"FinalizeAck {fid!r} came before the finalize was sent")
        if abs(ack.audio_ms - send.audio_ms) > SLACK_MS:
            return failed(f"FinalizeAck {fid!r} audio_ms {ack.audio_ms}, {send.audio_ms} ms sent")
        before = [r for i, r in _results(out) if i < index and r.is_final]
        forced = [r for r in before if r.from_finalize]
        if plan.case.params.get("speech_at_finalize") and not forced:
            hint = "" if _results(out) else f"; {NOT_HEARD}"
            return failed(
                f"speech was pending at finalize {fid!r}, no final with from_finalize before "
                f"its ack ({len(before)} finals before it){hint}"
            )
        late = [
            r
            for i, r in _results(out)
            if i > index and any(r.utterance_id == f.utterance_id for f in forced)
        ]
        if late:
            return failed(f"result of {late[0].utterance_id!r} after the FinalizeAck {fid!r}")
        for r in before:
            if r.end_ms > ack.audio_ms + SLACK_MS:
                return failed(f"final before the ack ends at {r.end_ms} ms > ack {ack.audio_ms} ms")
        evidence.append(f"{fid}: ack at {ack.audio_ms} ms after {len(forced)} forced final")
    return passed("; ".join(evidence))


@prop("summary_audio")
def summary_audio(out: Outcome, plan: Plan) -> Verdict:
    """The summary counts the audio received and the utterances (final results)."""
    summaries = out.of("summary")
    if not summaries:
        return failed("no summary")
    summary = summaries[-1][1]
    fmt = plan.stt_format
    sent = fmt.ms_of(plan.audio_bytes) if fmt else 0
    if abs(summary.audio_ms - sent) > SLACK_MS:
        return failed(f"summary audio_ms {summary.audio_ms}, {sent} ms of audio sent")
    finals = sum(1 for _, r in _results(out) if r.is_final)
    if summary.utterances != finals:
        return failed(f"summary utterances {summary.utterances}, {finals} final results sent")
    return passed(f"summary: {summary.audio_ms} ms received, {summary.utterances} utterances")


def _suspects(out: Outcome) -> list[tuple[int, Any]]:
    return [(i, n) for i, n in out.of("notice") if n.kind == SUSPECT]


@prop("format_suspect")
def format_suspect(out: Outcome, plan: Plan) -> Verdict:
    """Audio that does not sound like speech in its declared format: one KIND_FORMAT_SUSPECT
    notice saying what was heard, and the stream goes on as declared (docs/contract.md, "Input
    that does not match its declared format")."""
    found = _suspects(out)
    if len(found) != 1:
        return failed(f"{len(found)} KIND_FORMAT_SUSPECT notices; one expected")
    message = found[0][1].message.strip()
    if not message:
        return failed("the KIND_FORMAT_SUSPECT notice does not say what was heard")
    return passed(f"notice: {message[:160]}")


@prop("no_format_suspect")
def no_format_suspect(out: Outcome, plan: Plan) -> Verdict:
    """Speech in its declared format is never called suspect."""
    found = _suspects(out)
    if found:
        return failed(f"speech sent as declared was called suspect: {found[0][1].message[:160]}")
    return passed("no KIND_FORMAT_SUSPECT notice")


@prop("resumed_positions")
def resumed_positions(out: Outcome, plan: Plan) -> Verdict:
    """A stream opened to continue an earlier one (docs/contract.md, "Resuming"): every
    position is shifted by ``stream_offset_ms`` (results, words, finalize acks, the summary's
    audio_ms) and utterance ids go on from ``first_utterance_index`` ("u<index>")."""
    config = plan.stt_config
    if config is None:
        return failed("no config to check against")
    offset, first = config.stream_offset_ms, config.first_utterance_index
    results = _results(out)
    if not any(r.is_final for _, r in results):
        return failed(f"speech was sent, no final result came; {NOT_HEARD}")
    ids: list[str] = []
    for index, r in results:
        if r.utterance_id not in ids:
            ids.append(r.utterance_id)
        sent = offset + out.audio_ms_before(index)
        if r.start_ms < offset or r.end_ms > sent + SLACK_MS:
            return failed(
                f"result {r.utterance_id!r} at {r.start_ms}-{r.end_ms} ms, outside the stream's "
                f"positions {offset}-{sent} ms (stream_offset_ms {offset})"
            )
        for w in r.words:
            if w.start_ms < offset:
                return failed(f"word {w.word!r} at {w.start_ms} ms, before the offset {offset}")
    expected = [f"u{first + n}" for n in range(len(ids))]
    if ids != expected:
        return failed(f"first_utterance_index {first}: utterance ids {ids}, expected {expected}")
    for _, ack in out.of("finalize_ack"):
        if ack.audio_ms < offset:
            return failed(f"FinalizeAck audio_ms {ack.audio_ms}, before the offset {offset}")
    summaries = out.of("summary")
    fmt = plan.stt_format
    if summaries and fmt is not None:
        sent_ms = offset + fmt.ms_of(plan.audio_bytes)
        if abs(summaries[-1][1].audio_ms - sent_ms) > SLACK_MS:
            return failed(
                f"summary audio_ms {summaries[-1][1].audio_ms}, the stream's audio ends at "
                f"{sent_ms} ms (stream_offset_ms {offset})"
            )
    return passed(f"{len(results)} results from {offset} ms on, ids {ids[0]}..{ids[-1]}")


def _head(kinds: list[str]) -> str:
    return ", ".join(kinds[:4]) + (" ..." if len(kinds) > 4 else "")


def _tail(kinds: list[str]) -> str:
    return ("... " if len(kinds) > 4 else "") + ", ".join(kinds[-4:])
