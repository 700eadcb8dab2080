"""Every broken server and the cases it must fail: exactly these, no others."""

from __future__ import annotations

from examples import minimal_server as ex
from tests.conformance.broken.endings import (
    EchoesUncapped,
    EchoesUncappedSession,
    SilentViolations,
    both,
    fail_at_once,
    fail_with,
    fail_with_disagreeing_timings,
    fail_without_details,
    finish_without_binary_timings,
    health_without_synthesis,
    no_reflection,
    parsing_reader,
    raising_reader,
)
from tests.conformance.broken.server import Variant
from tests.conformance.broken.synthesis import (
    AudioAfterCancel,
    DoneAudioWrong,
    DropsLongText,
    FlushAckBeforeAudio,
    IgnoresOffsets,
    LateMessageInvalid,
    ManyContexts,
    OpenedTwice,
    ResendsSkippedAudio,
    SequenceFromTwo,
    SpeaksInvalidSsml,
    SpeaksPartialText,
    SpeaksSsmlAsText,
    SsmlUnnoticed,
    TilingGap,
    WaitsForTheClose,
    WordsOverlap,
    context_error_ends_stream,
    states_unit_audio,
    with_ssml,
)
from tests.conformance.broken.transcription import (
    AnyRate,
    AnyRateSession,
    DropsInterimRequest,
    FinalizeAckFirst,
    IgnoresStreamOffsets,
    InfinityAccepted,
    InterimAfterFinal,
    MisalignedAccepted,
    NoChunkLimit,
    NoFileCheck,
    NoFormatCheck,
    RefusesAfterClose,
    RefusesEveryWav,
    ResultBeyondAudio,
    SpillsErrors,
    StartedTwice,
    SuspectsEverything,
    UpdatesIgnored,
    UtterancesMiscounted,
    WordOutsideResult,
    WrongNativeRate,
    WrongNativeRateSession,
    no_default_stt,
    overclaims_rates,
    tts_without_voices,
    with_float_audio,
    with_interim,
)

RESUME_CASES = ("tts.resume.offsets", "tts.resume.skip-audio")
_NO_DETAILS, _NO_DETAILS_TTS = both("NoDetails", {"fail": fail_without_details})
_NO_TIMINGS, _NO_TIMINGS_TTS = both("NoTimings", {"finish": finish_without_binary_timings})
_BAD_TIMINGS, _BAD_TIMINGS_TTS = both("BadTimings", {"fail": fail_with_disagreeing_timings})
_UNPARSED, _UNPARSED_TTS = both("Unparsed", {"reader": raising_reader})
_PARSES_FIRST, _PARSES_FIRST_TTS = both("ParsesFirst", {"reader": parsing_reader})
_SWAPPED = type("Swapped", (ex.Transcription,), {"fail": fail_with, "swap_errors": True})
_SILENT, _SILENT_TTS = both("Silent", {"fail": fail_with, "strip_violations": True})
_AT_ONCE = type("AtOnce", (ex.Transcription,), {"fail": fail_at_once})

STREAM_ERRORS = frozenset(
    {
        "stt.config.required",
        "stt.config.already-set",
        "stt.config.unknown-model",
        "stt.config.model-of-other-kind",
        "stt.config.unsupported-encoding",
        "stt.config.unadvertised-rate",
        "stt.config.too-many-channels",
        "stt.config.unknown-language",
        "stt.config.lacking-interim-results",
        "stt.config.lacking-endpointing",
        "stt.config.lacking-vocabulary",
        "stt.audio.misaligned",
        "stt.format.wav-header-of-another-format",
        "stt.format.flac-file",
        "stt.format.ogg-file",
        "stt.errors.plain-writer-keeps-the-reason",
        "stt.message.empty",
        "stt.message.undecodable",
        "stt.limits.chunk-too-large",
        "stt.limits.idle-timeout",
        "stt.trailers.on-error",
        "stt.limits.message-too-large",
        "tts.limits.message-too-large",
        "stt.errors.echo-capped-long-model",
        "stt.errors.echo-capped-many-violations",
        "tts.message.empty",
        "tts.message.no-context-id",
        "tts.message.undecodable",
        "tts.limits.idle-timeout",
        "tts.trailers.on-error",
    }
)
CONTEXT_ERRORS = frozenset(
    {
        "tts.context.unknown-context",
        "tts.context.not-open",
        "tts.context.after-close",
        "tts.context.already-open",
        "tts.context.error-leaves-others",
        "tts.context.reopen-after-error",
        "tts.config.unknown-model",
        "tts.config.model-of-other-kind",
        "tts.config.unsupported-encoding",
        "tts.config.unadvertised-rate",
        "tts.config.too-many-channels",
        "tts.config.unknown-voice",
        "tts.config.unknown-language",
        "tts.config.lacking-ssml",
        "tts.config.lacking-pronunciation",
        "tts.limits.too-many-contexts",
        "tts.limits.chunk-too-large",
        "tts.limits.pending-text",
        "tts.errors.echo-capped",
    }
)
VIOLATIONS = frozenset(
    {
        "stt.config.unadvertised-rate",
        "stt.config.too-many-channels",
        "stt.config.unknown-language",
        "stt.config.lacking-interim-results",
        "stt.config.lacking-endpointing",
        "stt.config.lacking-vocabulary",
        "tts.config.unadvertised-rate",
        "tts.config.too-many-channels",
        "tts.config.unknown-voice",
        "tts.config.unknown-language",
        "tts.config.lacking-ssml",
        "tts.config.lacking-pronunciation",
        "stt.errors.echo-capped-many-violations",
    }
)

VARIANTS = [
    Variant(
        "no-format-check",
        "audio that does not sound like its declared format is told to the client",
        frozenset({"stt.format.g711-declared-as-pcm"}),
        transcription=NoFormatCheck,
    ),
    Variant(
        "no-file-check",
        "a file sent on the stream is refused, not played as samples",
        frozenset(
            {
                "stt.format.wav-header-of-another-format",
                "stt.format.flac-file",
                "stt.format.ogg-file",
            }
        ),
        transcription=NoFileCheck,
    ),
    Variant(
        "refuses-every-wav",
        "a WAV header of the declared format is left alone",
        frozenset({"stt.format.wav-header-as-declared"}),
        transcription=RefusesEveryWav,
    ),
    Variant(
        "suspects-everything",
        "speech in its declared format is never called suspect",
        frozenset({"stt.format.speech-as-declared", "stt.format.wav-header-as-declared"}),
        transcription=SuspectsEverything,
    ),
    Variant(
        "ssml-unnoticed",
        "plain text that opens an SSML document is told to the client",
        frozenset({"tts.format.ssml-in-plain-text"}),
        session=SsmlUnnoticed,
    ),
    Variant(
        "status-at-once",
        "a failed stream's status waits while the client still sends",
        frozenset({"stt.errors.plain-writer-keeps-the-reason"}),
        transcription=_AT_ONCE,
    ),
    Variant(
        "audio-after-cancel",
        "nothing for a context follows its cancel ack",
        frozenset({"tts.cancel.nothing-after", "tts.cancel.before-text"}),
        session=AudioAfterCancel,
    ),
    Variant(
        "opened-twice",
        "a context is opened once, first",
        frozenset({"tts.order.opened-first-done-last", "tts.context.reopen-after-error"}),
        session=OpenedTwice,
    ),
    Variant(
        "tiling-gap",
        "chunks tile exactly",
        frozenset(
            {
                "tts.audio.tiling",
                "tts.contexts.interleave",
                "tts.formats.every-advertised",
                *RESUME_CASES,
            }
        ),
        session=TilingGap,
    ),
    Variant(
        "sequence-from-two",
        "sequence numbers start at 1",
        frozenset(
            {
                "tts.audio.sequence-numbers",
                "tts.contexts.interleave",
                "tts.cancel.before-text",
                "tts.flush.without-text",
                *RESUME_CASES,
            }
        ),
        session=SequenceFromTwo,
    ),
    Variant(
        "ignores-stream-offsets",
        "a stream opened with stream_offset_ms and first_utterance_index goes on from them",
        frozenset({"stt.resume.offsets"}),
        transcription=IgnoresStreamOffsets,
    ),
    Variant(
        "ignores-offsets",
        "a context opened with timeline_offset_ms and first_sequence_number goes on from them",
        frozenset(RESUME_CASES),
        session=IgnoresOffsets,
    ),
    Variant(
        "resends-skipped-audio",
        "the audio of skip_audio_ms is not sent again",
        frozenset({"tts.resume.skip-audio"}),
        session=ResendsSkippedAudio,
    ),
    Variant(
        "tts-words-overlap",
        "TTS word timestamps do not overlap",
        frozenset({"tts.words.monotonic"}),
        session=WordsOverlap,
    ),
    Variant(
        "flush-ack-before-audio",
        "a FlushAck follows the audio of the text before it",
        frozenset({"tts.flush.ack-after-audio", "tts.append.partial-sentence-waits"}),
        session=FlushAckBeforeAudio,
    ),
    Variant(
        "done-audio-wrong",
        "ContextDone names the audio sent",
        frozenset(
            {"tts.close.done-names-the-audio", "tts.half-close.closes-every-context", *RESUME_CASES}
        ),
        session=DoneAudioWrong,
    ),
    Variant(
        "no-context-limit",
        "max_contexts_per_stream is enforced",
        frozenset({"tts.limits.too-many-contexts"}),
        session=ManyContexts,
    ),
    Variant(
        "no-pending-text-limit",
        "max_pending_text_bytes is enforced",
        frozenset({"tts.limits.pending-text"}),
        session=DropsLongText,
    ),
    Variant(
        "waits-for-the-close",
        "complete sentences start at once",
        frozenset({"tts.append.sentence-starts-at-once", "tts.cancel.nothing-after"}),
        session=WaitsForTheClose,
    ),
    Variant(
        "unit-audio-unbounded",
        "a model that states max_unit_audio_ms stops a unit there with TEXT_TOO_LARGE",
        frozenset({"tts.limits.unit-audio"}),
        session=SpeaksSsmlAsText,
        capabilities=states_unit_audio,
        only=("tts.limits.unit-audio",),
    ),
    Variant(
        "speaks-invalid-ssml",
        "invalid SSML is never spoken",
        frozenset({"tts.context.ssml-invalid", "tts.context.ssml-unsupported-element"}),
        session=SpeaksInvalidSsml,
        capabilities=with_ssml,
    ),
    Variant(
        "late-message-invalid",
        "a message after a context's close is answered as for a context gone",
        frozenset({"tts.context.after-close"}),
        session=LateMessageInvalid,
    ),
    Variant(
        "context-error-ends-stream",
        "a context error ends only that context",
        CONTEXT_ERRORS,
        synthesis_overrides={"write_all": context_error_ends_stream},
    ),
    Variant(
        "started-twice",
        "started comes once, first",
        frozenset(
            {
                "stt.order.started-first-summary-last",
                "stt.order.close-ends-the-stream",
                "stt.order.after-close-discarded",
            }
        ),
        transcription=StartedTwice,
    ),
    Variant(
        "refuses-after-close",
        "messages after a close are discarded unread",
        frozenset({"stt.order.after-close-discarded"}),
        transcription=RefusesAfterClose,
    ),
    Variant(
        "errors-spill-over",
        "a failing stream never affects another",
        frozenset({"stt.errors.isolated"}),
        transcription=SpillsErrors,
        only=("stt.errors.isolated",),
    ),
    Variant(
        "finalize-ack-first",
        "a FinalizeAck follows the results of the audio before it",
        frozenset({"stt.finalize.ack-after-results"}),
        transcription=FinalizeAckFirst,
    ),
    Variant(
        "result-beyond-audio",
        "results never go beyond the audio received",
        frozenset(
            {
                "stt.results.within-audio-sent",
                "stt.resume.offsets",
                "stt.order.close-ends-the-stream",
                "stt.finalize.ack-after-results",
                "stt.order.after-close-discarded",
            }
        ),
        transcription=ResultBeyondAudio,
    ),
    Variant(
        "word-outside-result",
        "STT words are inside their result",
        frozenset({"stt.results.word-timings"}),
        transcription=WordOutsideResult,
    ),
    Variant(
        "utterances-miscounted",
        "the summary counts the utterances",
        frozenset(
            {
                "stt.results.summary-counts-audio",
                "stt.resume.offsets",
                "stt.limits.chunk-at-limit",
                "stt.formats.every-advertised",
                "stt.order.after-close-discarded",
            }
        ),
        transcription=UtterancesMiscounted,
    ),
    Variant(
        "interim-after-final",
        "interim results precede their final",
        frozenset({"stt.results.interim-before-final"}),
        transcription=InterimAfterFinal,
        capabilities=with_interim,
    ),
    Variant(
        "drops-interim-request",
        "a feature the model lacks is refused, never dropped",
        frozenset({"stt.config.lacking-interim-results"}),
        transcription=DropsInterimRequest,
    ),
    Variant(
        "accepts-unadvertised-rate",
        "a rate the model does not advertise is refused",
        frozenset({"stt.config.unadvertised-rate", "tts.config.unadvertised-rate"}),
        transcription=AnyRate,
        session=AnyRateSession,
    ),
    Variant(
        "overclaims-rates",
        "every advertised format is accepted",
        frozenset({"stt.formats.every-advertised"}),
        capabilities=overclaims_rates,
    ),
    Variant(
        "no-chunk-limit",
        "max_chunk_bytes is enforced",
        frozenset({"stt.limits.chunk-too-large"}),
        transcription=NoChunkLimit,
    ),
    Variant(
        "misaligned-accepted",
        "misaligned audio is MISALIGNED_AUDIO",
        frozenset({"stt.audio.misaligned"}),
        transcription=MisalignedAccepted,
    ),
    Variant(
        "updates-ignored",
        "an update is never silently ignored",
        frozenset(
            {"stt.update-config.lacking-vocabulary", "stt.update-config.lacking-endpointing"}
        ),
        transcription=UpdatesIgnored,
    ),
    Variant(
        "wrong-native-rate",
        "started/opened name the advertised native rate",
        frozenset(
            {
                "stt.started.names-model",
                "stt.started.default-model",
                "tts.opened.names-model",
                "tts.opened.default-model",
            }
        ),
        transcription=WrongNativeRate,
        session=WrongNativeRateSession,
    ),
    Variant(
        "tts-model-without-voices",
        "Capabilities lists a TTS model's voices",
        frozenset({"capabilities.well-formed"}),
        capabilities=tts_without_voices,
    ),
    Variant(
        "no-default-model",
        "Capabilities marks the model an empty name selects",
        frozenset({"stt.started.default-model"}),
        capabilities=no_default_stt,
    ),
    Variant(
        "no-error-details",
        "every error status carries ErrorInfo",
        STREAM_ERRORS,
        transcription=_NO_DETAILS,
        synthesis_overrides=_NO_DETAILS_TTS,
    ),
    Variant(
        "wrong-code-and-retryability",
        "each reason has the table's code and retryability",
        frozenset({"stt.config.required", "stt.config.already-set"}),
        transcription=_SWAPPED,
    ),
    Variant(
        "no-violations",
        "configuration errors name their fields",
        VIOLATIONS,
        transcription=_SILENT,
        synthesis_overrides=_SILENT_TTS,
        session=SilentViolations,
    ),
    Variant(
        "no-binary-timings",
        "OK streams end with voxwire-timings-bin",
        frozenset({"stt.trailers.on-ok", "tts.trailers.on-ok"}),
        transcription=_NO_TIMINGS,
        synthesis_overrides=_NO_TIMINGS_TTS,
    ),
    Variant(
        "disagreeing-timings",
        "server-timing says what voxwire-timings-bin says",
        frozenset({"stt.trailers.on-error", "tts.trailers.on-error"}),
        transcription=_BAD_TIMINGS,
        synthesis_overrides=_BAD_TIMINGS_TTS,
    ),
    Variant(
        "undecodable-unhandled",
        "undecodable bytes are INVALID_MESSAGE",
        frozenset({"stt.message.undecodable", "tts.message.undecodable"}),
        transcription=_UNPARSED,
        synthesis_overrides=_UNPARSED_TTS,
    ),
    Variant(
        "parses-oversized-messages",
        "a message over max_chunk_bytes + 64 KiB is refused unparsed",
        frozenset({"stt.limits.message-too-large", "tts.limits.message-too-large"}),
        transcription=_PARSES_FIRST,
        synthesis_overrides=_PARSES_FIRST_TTS,
    ),
    Variant(
        "errors-echo-uncapped",
        "what an error echoes of the client's input is capped",
        frozenset(
            {
                "stt.errors.echo-capped-long-model",
                "stt.errors.echo-capped-many-violations",
                "tts.errors.echo-capped",
            }
        ),
        transcription=EchoesUncapped,
        session=EchoesUncappedSession,
    ),
    Variant(
        "accepts-infinite-samples",
        "float samples must be numbers: infinity is INVALID_AUDIO",
        frozenset({"stt.audio.infinite-samples"}),
        transcription=InfinityAccepted,
        capabilities=with_float_audio,
    ),
    Variant(
        "speaks-partial-text",
        "text short of a sentence end waits for more text, a flush or the close",
        frozenset({"tts.append.partial-sentence-waits"}),
        session=SpeaksPartialText,
    ),
    Variant(
        "never-idle",
        "idle_timeout is enforced as advertised",
        frozenset({"stt.limits.idle-timeout", "tts.limits.idle-timeout"}),
        idle_s=3600.0,
    ),
    Variant(
        "no-synthesis-health",
        "health per service name",
        frozenset({"health.check-per-service", "health.watch"}),
        extras=health_without_synthesis,
    ),
    Variant(
        "no-reflection",
        "reflection lists the services",
        frozenset({"reflection.lists-services"}),
        extras=no_reflection,
    ),
]
