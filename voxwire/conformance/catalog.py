"""What the server says it offers (GetCapabilities), and the model each case runs on.

The kit believes the server's Capabilities and then checks that behaviour matches them: a case
that needs a feature runs on a model that advertises it, a case about refusing a feature runs on
one that lacks it, formats come from the model's advertised lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from voxwire.v1 import audio_pb2, capabilities_pb2

KIND_NAMES = {"stt": capabilities_pb2.MODEL_KIND_STT, "tts": capabilities_pb2.MODEL_KIND_TTS}
_BYTES_PER_SAMPLE: dict[int, int] = {
    audio_pb2.AUDIO_ENCODING_PCM_S16LE: 2,
    audio_pb2.AUDIO_ENCODING_PCM_F32LE: 4,
    audio_pb2.AUDIO_ENCODING_MULAW: 1,
    audio_pb2.AUDIO_ENCODING_ALAW: 1,
}
# Rates tried, in order, when a case needs one the model does not advertise: common rates
# first (a server that advertises 16 kHz only must refuse 8 kHz), then one nobody uses.
_RATE_CANDIDATES = (8000, 16000, 22050, 24000, 44100, 48000, 11025, 12000, 32000, 7000)


@dataclass(frozen=True, slots=True)
class Format:
    """One concrete audio format of a stream."""

    encoding: int
    rate: int
    channels: int = 1

    @property
    def bytes_per_frame(self) -> int:
        return _BYTES_PER_SAMPLE.get(self.encoding, 2) * max(1, self.channels)

    def ms_of(self, nbytes: int) -> int:
        """Milliseconds of audio in ``nbytes`` (whole frames), as the contract counts them."""
        return nbytes // self.bytes_per_frame * 1000 // self.rate if self.rate else 0

    def to_proto(self) -> audio_pb2.AudioFormat:
        return audio_pb2.AudioFormat(
            encoding=self.encoding,  # type: ignore[arg-type]
            sample_rate_hz=self.rate,
            channels=self.channels,
        )

    def __str__(self) -> str:
        return f"{encoding_name(self.encoding)} {self.rate} Hz x{self.channels}"


def encoding_name(value: int) -> str:
    """An encoding's contract name (``PCM_S16LE``), or its number when it has none."""
    if value not in audio_pb2.AudioEncoding.values():
        return str(value)
    return audio_pb2.AudioEncoding.Name(value).removeprefix("AUDIO_ENCODING_")  # type: ignore[arg-type]


def encoding_value(name: str) -> int:
    """``"PCM_S16LE"`` -> its enum value. Raises ValueError."""
    return audio_pb2.AudioEncoding.Value(f"AUDIO_ENCODING_{name}")


def advertised(model: capabilities_pb2.ModelCapabilities) -> list[capabilities_pb2.FormatSupport]:
    """The formats a model takes (STT input) or produces (TTS output)."""
    if model.kind == capabilities_pb2.MODEL_KIND_STT:
        return list(model.input_formats)
    return list(model.output_formats)


def has_feature(model: capabilities_pb2.ModelCapabilities, feature: str) -> bool:
    return bool(getattr(model.features, feature))


class ServerCatalog:
    """The server's Capabilities, ordered for choosing models."""

    def __init__(
        self, caps: capabilities_pb2.GetCapabilitiesResponse, only: Sequence[str] = ()
    ) -> None:
        self.caps = caps
        self.only = tuple(only)

    def models(self, kind: str) -> list[capabilities_pb2.ModelCapabilities]:
        """Models of ``kind`` in order of preference (``--models`` order when given, else
        the default first, then non-benchmark models, then benchmark ones)."""
        of_kind = [m for m in self.caps.models if m.kind == KIND_NAMES[kind]]
        if self.only:
            by_name = {m.name: m for m in of_kind}
            return [by_name[n] for n in self.only if n in by_name]
        return sorted(of_kind, key=lambda m: (not m.is_default, m.benchmark, m.name))

    def pick(
        self, kind: str, needs: Sequence[str], lacks: Sequence[str], encodings: Sequence[int]
    ) -> capabilities_pb2.ModelCapabilities | str:
        """The first model that fits, or why none does."""
        label = kind.upper()
        candidates = self.models(kind)
        if not candidates:
            scope = " among --models" if self.only else ""
            return f"the server offers no {label} model{scope}"
        for feature in needs:
            candidates = [m for m in candidates if has_feature(m, feature)]
            if not candidates:
                return f"no {label} model advertises {feature}"
        for feature in lacks:
            candidates = [m for m in candidates if not has_feature(m, feature)]
            if not candidates:
                return f"every {label} model advertises {feature} (nothing to refuse)"
        for encoding in encodings:
            candidates = [
                m for m in candidates if any(f.encoding == encoding for f in advertised(m))
            ]
            if not candidates:
                return f"no fitting {label} model advertises {encoding_name(encoding)}"
        return candidates[0]

    def other_kind(self, kind: str) -> str:
        """A model name of the other kind ("" when there is none)."""
        other = self.models("tts" if kind == "stt" else "stt")
        return other[0].name if other else ""

    def default_model(self, kind: str) -> capabilities_pb2.ModelCapabilities | None:
        return next(
            (m for m in self.caps.models if m.kind == KIND_NAMES[kind] and m.is_default), None
        )

    def limits(self) -> dict[str, int]:
        """The advertised limits by the names case files use (0: not advertised)."""
        lim = self.caps.limits
        return {
            "max_chunk_bytes": lim.max_chunk_bytes,
            "max_contexts_per_stream": lim.max_contexts_per_stream,
            "max_pending_text_bytes": lim.max_pending_text_bytes,
            "idle_timeout_ms": lim.idle_timeout.ToMilliseconds(),
            "max_stream_duration_ms": lim.max_stream_duration.ToMilliseconds(),
            "max_unread_response_bytes": lim.max_unread_response_bytes,
            "write_timeout_ms": lim.write_timeout.ToMilliseconds(),
        }


def default_format(model: capabilities_pb2.ModelCapabilities, encoding: int = 0) -> Format:
    """An advertised format of ``model``: PCM_S16LE (or ``encoding``) at the native rate when
    offered, else the first rate of the first matching encoding.

    Raises LookupError when the model advertises no such format."""
    wanted = encoding or audio_pb2.AUDIO_ENCODING_PCM_S16LE
    supports = advertised(model)
    ordered = [f for f in supports if f.encoding == wanted]
    if not encoding:
        ordered += [f for f in supports if f.encoding != wanted]
    for support in ordered:
        rates = list(support.sample_rates_hz)
        if rates:
            rate = model.native_sample_rate_hz if model.native_sample_rate_hz in rates else rates[0]
            return Format(support.encoding, rate, 1)
    raise LookupError(f"{model.name} advertises no format for this")


def unadvertised_rate(model: capabilities_pb2.ModelCapabilities, encoding: int) -> int:
    """A sample rate ``model`` does not advertise for ``encoding``."""
    rates: set[int] = set()
    for support in advertised(model):
        if support.encoding == encoding:
            rates |= set(support.sample_rates_hz)
    return next(r for r in _RATE_CANDIDATES if r not in rates)


def max_channels(model: capabilities_pb2.ModelCapabilities, encoding: int) -> int:
    """The advertised channel limit for ``encoding`` (0 in the message means 1)."""
    counts = [f.max_channels or 1 for f in advertised(model) if f.encoding == encoding]
    return max(counts, default=1)


def every_format(model: capabilities_pb2.ModelCapabilities) -> list[Format]:
    """Each advertised (encoding, rate) in mono, plus each encoding at its channel limit."""
    out: list[Format] = []
    for support in advertised(model):
        rates = list(support.sample_rates_hz)
        out += [Format(support.encoding, rate, 1) for rate in rates]
        if (support.max_channels or 1) > 1 and rates:
            out.append(Format(support.encoding, rates[0], support.max_channels))
    return out


def limit_names(limits: Mapping[str, int], fmt: Format | None) -> dict[str, int]:
    """The names an expression in a case may use."""
    names = dict(limits)
    names["frame"] = fmt.bytes_per_frame if fmt else 2
    return names
