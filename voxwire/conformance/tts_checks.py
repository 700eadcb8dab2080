"""Property checks of streaming synthesis (docs/contract.md, "Streaming synthesis").

A context id can be opened again after it ended, so a context's responses are split into
"lives": each ends with its terminal response (done, cancelled, error).
"""

from __future__ import annotations

from typing import Any

from voxwire.conformance.driver import Outcome
from voxwire.conformance.expect import summary
from voxwire.conformance.plan import Plan
from voxwire.conformance.verdict import Verdict, failed, passed, prop
from voxwire.v1 import stream_pb2

TERMINAL = frozenset({"done", "cancelled", "error"})
SLACK_MS = 1
Life = list[tuple[int, Any]]  # (index in the stream, response)


def contexts(out: Outcome) -> list[str]:
    seen: dict[str, None] = {}
    for r in out.responses:
        if r.context_id:
            seen.setdefault(r.context_id, None)
    return list(seen)


def lives(out: Outcome, cid: str) -> list[Life]:
    result: list[Life] = [[]]
    for index, r in enumerate(out.responses):
        if r.context_id != cid:
            continue
        result[-1].append((index, r))
        if r.WhichOneof("response") in TERMINAL:
            result.append([])
    return [life for life in result if life]


def _kind(r: Any) -> str:
    return str(r.WhichOneof("response"))


def _chunks(life: Life) -> list[tuple[int, Any]]:
    return [(i, r.audio) for i, r in life if r.HasField("audio")]


@prop("text_suspect")
def text_suspect(out: Outcome, plan: Plan) -> Verdict:
    """A context opened plain whose text opens an SSML document: one KIND_FORMAT_SUSPECT notice
    for the context, before its audio; the text is still spoken (docs/contract.md, "Input that
    does not match its declared format")."""
    evidence = []
    for cid in contexts(out):
        for life in lives(out, cid):
            notices = [
                (i, r.notice)
                for i, r in life
                if r.HasField("notice")
                and r.notice.kind == stream_pb2.StreamNotice.KIND_FORMAT_SUSPECT
            ]
            if len(notices) != 1:
                return failed(
                    f"context {cid}: {len(notices)} KIND_FORMAT_SUSPECT notices; one expected"
                )
            chunks = _chunks(life)
            if not chunks:
                return failed(f"context {cid}: no audio (the text is spoken as declared)")
            if chunks[0][0] < notices[0][0]:
                return failed(f"context {cid}: the notice came after the context's first audio")
            evidence.append(f"{cid}: {notices[0][1].message[:120]}")
    if not evidence:
        return failed("no context")
    return passed("; ".join(evidence))


@prop("tts_order")
def tts_order(out: Outcome, plan: Plan) -> Verdict:
    """Each context starts with opened (or the error of its open) and nothing follows its done,
    cancelled or error; the summary comes once, last, with no context id."""
    kinds = out.kinds()
    if kinds.count("summary") != 1 or kinds[-1] != "summary":
        return failed(f"summary must come once and last; last responses: {kinds[-3:]}")
    if out.responses[-1].context_id:
        return failed("the summary names a context")
    for cid in contexts(out):
        for life in lives(out, cid):
            first = _kind(life[0][1])
            if first not in ("opened", "error"):
                return failed(f"context {cid!r}: {first} before opened")
            if first == "error" and len(life) > 1:
                return failed(f"context {cid!r}: {_kind(life[1][1])} after its error")
            if [_kind(r) for _, r in life].count("opened") > 1:
                return failed(f"context {cid!r}: opened twice in one life")
            open_sends = [m for m, s in out.marks if s.label == f"open {cid}"]
            if not any(m <= life[0][0] for m in open_sends) and first == "opened":
                return failed(f"context {cid!r}: opened before the kit opened it")
    return passed(
        f"{len(contexts(out))} contexts: opened first, nothing after the end, summary last"
    )


@prop("sequence_numbers")
def sequence_numbers(out: Outcome, plan: Plan) -> Verdict:
    """Audio chunks of a context are numbered 1, 2, 3, ..."""
    total = 0
    for cid in contexts(out):
        for life in lives(out, cid):
            numbers = [a.sequence_number for _, a in _chunks(life)]
            if numbers != list(range(1, len(numbers) + 1)):
                return failed(f"context {cid!r} sequence numbers {_short(numbers)}")
            total += len(numbers)
    if not total:
        return failed("no audio chunk to check")
    return passed(f"{total} chunks numbered 1.. per context")


@prop("audio_tiling")
def audio_tiling(out: Outcome, plan: Plan) -> Verdict:
    """start_ms[n+1] = start_ms[n] + duration_ms[n] from 0; chunks are whole frames and their
    durations match their bytes."""
    total = 0
    for cid in contexts(out):
        fmt = plan.context_formats.get(cid)
        for life in lives(out, cid):
            chunks = _chunks(life)
            expected_start, nbytes = 0, 0
            for n, (_, chunk) in enumerate(chunks, start=1):
                if chunk.start_ms != expected_start:
                    return failed(
                        f"context {cid!r} chunk {n} starts at {chunk.start_ms} ms, the chunk "
                        f"before ended at {expected_start} ms"
                    )
                expected_start = chunk.start_ms + chunk.duration_ms
                nbytes += len(chunk.audio)
                if fmt is None:
                    continue
                if len(chunk.audio) % fmt.bytes_per_frame:
                    return failed(
                        f"context {cid!r} chunk {n}: {len(chunk.audio)} bytes, "
                        f"not whole frames of {fmt}"
                    )
                if abs(chunk.duration_ms - fmt.ms_of(len(chunk.audio))) > SLACK_MS:
                    return failed(
                        f"context {cid!r} chunk {n}: duration_ms {chunk.duration_ms}, its bytes "
                        f"hold {fmt.ms_of(len(chunk.audio))} ms of {fmt}"
                    )
            if fmt is not None and abs(expected_start - fmt.ms_of(nbytes)) > SLACK_MS:
                return failed(
                    f"context {cid!r}: chunks say {expected_start} ms, their bytes hold "
                    f"{fmt.ms_of(nbytes)} ms"
                )
            total += len(chunks)
    if not total:
        return failed("no audio chunk to check")
    return passed(f"{total} chunks tile exactly from 0 ms, durations match the bytes")


@prop("tts_words")
def tts_words(out: Outcome, plan: Plan) -> Verdict:
    """Word timestamps of a context are monotonic and do not overlap."""
    count = 0
    for cid in contexts(out):
        for life in lives(out, cid):
            prev_end, prev_word = 0, ""
            for _, r in life:
                if not r.HasField("words"):
                    continue
                for w in r.words.words:
                    if w.start_ms > w.end_ms:
                        return failed(
                            f"{cid!r} word {w.word!r} starts at {w.start_ms} "
                            f"after its end {w.end_ms}"
                        )
                    if w.start_ms < prev_end:
                        return failed(
                            f"{cid!r} word {w.word!r} starts at {w.start_ms} ms, before "
                            f"{prev_word!r} ended ({prev_end} ms)"
                        )
                    prev_end, prev_word = w.end_ms, w.word
                    count += 1
    if not count:
        return failed("word_timestamps requested, no word timestamps came")
    return passed(f"{count} words, monotonic and non-overlapping")


@prop("flush_ack")
def flush_ack(out: Outcome, plan: Plan) -> Verdict:
    """Each flush is acked once; all audio for text appended before it was sent before the ack
    (last_sequence_number is the last chunk sent, and no audio follows until more text)."""
    flushes = [(m, s) for m, s in out.marks if s.label.startswith("flush ")]
    if not flushes:
        return failed("the case sent no flush")
    evidence = []
    for mark, send in flushes:
        cid, fid = send.context, send.label.split(" ", 2)[2]
        acks = [(i, a) for i, a in out.of("flush_ack", cid) if a.flush_id == fid]
        if len(acks) != 1:
            return failed(f"{len(acks)} FlushAck {fid!r} for {cid!r}, expected one")
        index, ack = acks[0]
        before = [a for i, a in out.of("audio", cid) if i < index]
        last = before[-1].sequence_number if before else 0
        if ack.last_sequence_number != last:
            return failed(
                f"FlushAck {fid!r} last_sequence_number {ack.last_sequence_number}, "
                f"last chunk sent {last}"
            )
        appended = any(s.label.startswith(f"append {cid} ") for m, s in out.marks if m <= mark)
        if appended and not before:
            return failed(f"text was appended before flush {fid!r}, no audio before its ack")
        next_marks = [
            m
            for m, s in out.marks
            if s.context == cid and m > mark and not s.label.startswith("flush ")
        ]
        until = next_marks[0] if next_marks else None
        if until is not None:
            late = [i for i, _ in out.of("audio", cid) if index < i < until]
            if late:
                return failed(f"audio for {cid!r} after FlushAck {fid!r} and before more text")
        evidence.append(f"{fid}: ack after {len(before)} chunks, last {last}")
    return passed("; ".join(evidence))


@prop("cancel_ack")
def cancel_ack(out: Outcome, plan: Plan) -> Verdict:
    """A cancel is answered by ContextCancelled naming the last chunk sent, and nothing for
    the context follows it."""
    cancels = [(m, s) for m, s in out.marks if s.label.startswith("cancel ")]
    if not cancels:
        return failed("the case sent no cancel")
    evidence = []
    for mark, send in cancels:
        cid = send.context
        acks = [(i, a) for i, a in out.of("cancelled", cid) if i >= mark]
        if len(acks) != 1:
            return failed(f"{len(acks)} ContextCancelled for {cid!r}, expected one")
        index, ack = acks[0]
        before = [a for i, a in out.of("audio", cid) if i < index]
        last = before[-1].sequence_number if before else 0
        if ack.last_sequence_number != last:
            return failed(
                f"ContextCancelled last_sequence_number {ack.last_sequence_number}, "
                f"last chunk sent {last}"
            )
        reopen = [m for m, s in out.marks if s.label == f"open {cid}" and m > mark]
        until = reopen[0] if reopen else len(out.responses)
        after = [
            _kind(r)
            for i, r in enumerate(out.responses)
            if index < i < until and r.context_id == cid
        ]
        if after:
            return failed(
                f"{after[0]} for {cid!r} after its ContextCancelled ({len(after)} responses)"
            )
        evidence.append(f"{cid}: cancelled after chunk {last}, nothing after")
    return passed("; ".join(evidence))


@prop("done_ack")
def done_ack(out: Outcome, plan: Plan) -> Verdict:
    """ContextDone names the last chunk and the audio sent, and nothing follows it."""
    checked = 0
    for cid in contexts(out):
        for life in lives(out, cid):
            index, last = life[-1]
            if _kind(last) != "done":
                continue
            chunks = _chunks(life)
            seq = chunks[-1][1].sequence_number if chunks else 0
            end = chunks[-1][1].start_ms + chunks[-1][1].duration_ms if chunks else 0
            done = last.done
            if done.last_sequence_number != seq:
                return failed(
                    f"{cid!r} done last_sequence_number {done.last_sequence_number}, "
                    f"last chunk {seq}"
                )
            if abs(done.audio_ms - end) > SLACK_MS:
                return failed(f"{cid!r} done audio_ms {done.audio_ms}, chunks end at {end} ms")
            checked += 1
    if not checked:
        return failed("no ContextDone to check")
    return passed(f"{checked} ContextDone name the last chunk and the audio ms")


@prop("resumed_timeline")
def resumed_timeline(out: Outcome, plan: Plan) -> Verdict:
    """A context opened to continue an earlier one (docs/contract.md, "Resuming"): its first
    chunk is numbered ``first_sequence_number`` and starts at ``timeline_offset_ms`` plus
    ``skip_audio_ms``, the chunks go on from there, no word timestamp ends within the audio
    skipped or starts before the offset, and ``done`` names the last chunk and the audio end."""
    checked = 0
    for cid in contexts(out):
        config = plan.contexts.get(cid)
        if config is None:
            continue
        first_seq = max(1, config.first_sequence_number)
        start = config.timeline_offset_ms + config.skip_audio_ms
        for life in lives(out, cid):
            chunks = [a for _, a in _chunks(life)]
            if not chunks:
                return failed(f"context {cid!r}: no audio to check")
            numbers = [a.sequence_number for a in chunks]
            if numbers != list(range(first_seq, first_seq + len(numbers))):
                return failed(
                    f"context {cid!r} opened with first_sequence_number {first_seq}: "
                    f"chunks numbered {_short(numbers)}"
                )
            if abs(chunks[0].start_ms - start) > SLACK_MS:
                return failed(
                    f"context {cid!r} opened with timeline_offset_ms "
                    f"{config.timeline_offset_ms} and skip_audio_ms {config.skip_audio_ms}: "
                    f"its first chunk starts at {chunks[0].start_ms} ms, not {start}"
                )
            for a, b in zip(chunks, chunks[1:], strict=False):
                if b.start_ms != a.start_ms + a.duration_ms:
                    return failed(
                        f"context {cid!r} chunk {b.sequence_number} starts at {b.start_ms} ms, "
                        f"the one before ended at {a.start_ms + a.duration_ms}"
                    )
            for _, r in life:
                for w in r.words.words if r.HasField("words") else ():
                    if w.end_ms <= start or w.start_ms < config.timeline_offset_ms:
                        return failed(
                            f"context {cid!r}: word {w.word!r} at {w.start_ms}-{w.end_ms} ms, "
                            f"audio the client has (before {start} ms)"
                        )
            last = life[-1][1]
            end = chunks[-1].start_ms + chunks[-1].duration_ms
            if _kind(last) == "done" and (
                last.done.last_sequence_number != numbers[-1]
                or abs(last.done.audio_ms - end) > SLACK_MS
            ):
                return failed(
                    f"context {cid!r}: done names chunk {last.done.last_sequence_number} and "
                    f"{last.done.audio_ms} ms; the last chunk is {numbers[-1]}, ending at {end}"
                )
            checked += 1
    if not checked:
        return failed("no resumed context to check")
    return passed(f"{checked} contexts go on from their offset, numbering and skip")


@prop("text_waits")
def text_waits(out: Outcome, plan: Plan) -> Verdict:
    """Text short of a sentence end waits: no audio for a context comes before the kit sent its
    first flush or close (or half-closed), and audio comes after it."""
    checked = []
    for cid in plan.contexts:
        ends = [
            m
            for m, s in out.marks
            if s.context == cid and s.label.startswith((f"flush {cid} ", f"close {cid}"))
        ]
        until = ends[0] if ends else len(out.responses)
        what = "flush or close" if ends else "half-close"
        chunks = out.of("audio", cid)
        early = [i for i, _ in chunks if i < until]
        if early:
            sent = [s.label for m, s in out.marks if s.context == cid and m <= early[0]]
            return failed(
                f"audio for {cid!r} before its {what}, after only {', '.join(sent)}: text short "
                "of a sentence end was spoken"
            )
        if not chunks:
            return failed(f"no audio for {cid!r} at all ({summary(out)})")
        checked.append(f"{cid}: {len(chunks)} chunks, none before the {what}")
    if not checked:
        return failed("the case opened no context")
    return passed("; ".join(checked))


@prop("no_audio")
def no_audio(out: Outcome, plan: Plan) -> Verdict:
    """The contexts in params.no_audio got no audio (invalid input is never spoken)."""
    names = plan.case.params.get("no_audio", [])
    for cid in names:
        chunks = out.of("audio", cid)
        if chunks:
            return failed(f"context {cid!r} got {len(chunks)} audio chunks")
    return passed(f"no audio for {', '.join(repr(c) for c in names)}")


@prop("unit_audio_capped")
def unit_audio_capped(out: Outcome, plan: Plan) -> Verdict:
    """Context "a", whose one unit's audio runs past the model's ``max_unit_audio_ms``, got
    the audio up to there and no further (docs/contract.md, "Text format"): at most the limit
    (a chunk that crosses it is whole frames), and not much less (the model stops there, not at
    once: within a tenth of the limit or 10 s)."""
    limit = plan.model.limits.max_unit_audio_ms if plan.model is not None else 0
    if not limit:
        return failed("the model states no max_unit_audio_ms")
    chunks = [chunk for _, chunk in out.of("audio", "a")]
    end = max((c.start_ms + c.duration_ms for c in chunks), default=0)
    longest = max((c.duration_ms for c in chunks), default=0)
    if end > limit + longest:
        return failed(f"{end} ms of audio, past max_unit_audio_ms {limit}")
    if end < limit - max(10_000, limit // 10):
        return failed(f"{end} ms of audio before TEXT_TOO_LARGE: it stopped short of {limit} ms")
    return passed(f"{end} ms of audio ({len(chunks)} chunks), then TEXT_TOO_LARGE at {limit} ms")


def _short(numbers: list[int]) -> str:
    return str(numbers if len(numbers) <= 8 else [*numbers[:6], "...", numbers[-1]])
