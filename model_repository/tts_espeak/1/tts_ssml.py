"""A strict SSML 1.1 subset: validate completely, then rewrite into SSML that eSpeak NG speaks.

Accepted (anything else is ``SSML_INVALID`` with the element/attribute and line:column)::

    <speak version="1.0|1.1"? xmlns="http://www.w3.org/2001/10/synthesis"? xml:lang="..."?>
      <p> <s>                              paragraph / sentence (no attributes; no p in p or s)
      <break time="250ms|1.5s" strength="none|x-weak|weak|medium|strong|x-strong"/>
                                           time up to 10 s; timed breaks that touch
                                           (whitespace between) add up (_joined_breaks)
      <prosody rate=".." pitch=".." volume="..">
          rate:   x-slow|slow|medium|fast|x-fast|default | N% (20..400, of the normal rate)
          pitch:  x-low|low|medium|high|x-high|default   | +N% / -N% (N <= 100)
          volume: silent|x-soft|soft|medium|loud|x-loud|default | +NdB / -NdB (-40..+20)
      <emphasis level="strong|moderate|none|reduced"?>
      <say-as interpret-as="characters|spell-out|digits|cardinal|number">text</say-as>
      <sub alias="spoken text">written text</sub>
      <phoneme alphabet="x-espeak" ph="eSpeak phoneme mnemonics">text</phoneme>

Parsing uses the expat parser (the one under xml.etree.ElementTree) directly, because
ElementTree does not report where in the source a text node was, and word offsets must point
into the client's document. A DOCTYPE/ENTITY declaration or processing instruction is refused
before or during parsing: no entity expansion beyond the five predefined XML entities.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

from tts_text import (
    ESPEAK_FLAG_PHONEMES,
    ESPEAK_FLAG_SSML,
    SSML_NAMESPACE,
    MappedText,
    Pronunciation,
    TextEmitter,
    TextError,
    check_phonemes,
)

_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_ATTRIBUTES: dict[str, frozenset[str]] = {
    "speak": frozenset({"version", "xmlns", "xml:lang"}),
    "p": frozenset(),
    "s": frozenset(),
    "break": frozenset({"time", "strength"}),
    "prosody": frozenset({"rate", "pitch", "volume"}),
    "emphasis": frozenset({"level"}),
    "say-as": frozenset({"interpret-as"}),
    "sub": frozenset({"alias"}),
    "phoneme": frozenset({"alphabet", "ph"}),
}
# Every element this module implements. A model may accept fewer (its voxwire.ssml_elements
# parameter, which Capabilities publishes); never more.
SSML_ELEMENTS = frozenset(_ATTRIBUTES)
_REQUIRED = {"say-as": ("interpret-as",), "sub": ("alias",), "phoneme": ("alphabet", "ph")}
_TEXT_ONLY = frozenset({"say-as", "sub", "phoneme"})
_NOT_INSIDE = {"p": frozenset({"p", "s"}), "s": frozenset({"s"}), "speak": frozenset(_ATTRIBUTES)}
_KEYWORDS = {
    "strength": {"none", "x-weak", "weak", "medium", "strong", "x-strong"},
    "rate": {"x-slow", "slow", "medium", "fast", "x-fast", "default"},
    "pitch": {"x-low", "low", "medium", "high", "x-high", "default"},
    "volume": {"silent", "x-soft", "soft", "medium", "loud", "x-loud", "default"},
    "level": {"strong", "moderate", "none", "reduced"},
    "interpret-as": {"characters", "spell-out", "digits", "cardinal", "number"},
}
_MAX_BREAK_MS = 10_000
_PERCENT = r"(\d+(?:\.\d+)?)%"


def _fail(where: str, message: str) -> TextError:
    return TextError("SSML_INVALID", f"{where}: {message}")


@dataclass(slots=True)
class _Text:
    text: str
    start: int  # span in the original document (code points)
    end: int
    exact: bool  # text == document[start:end] (no entity, no newline normalisation)


@dataclass(slots=True)
class _Element:
    tag: str
    attrs: dict[str, str]  # normalised values, ready for eSpeak
    position: int  # document index of the start tag
    children: list[_Element | _Text] = field(default_factory=list)

    def content_span(self) -> tuple[int, int]:
        texts = [c for c in self.children if isinstance(c, _Text)]
        if not texts:
            return self.position, self.position
        return texts[0].start, texts[-1].end


def _number(value: str, pattern: str, where: str, low: float, high: float) -> float:
    match = re.fullmatch(pattern, value)
    if not match or not low <= float(match.group(1)) <= high:
        raise _fail(where, f"value {value!r} is outside the accepted grammar")
    return float(match.group(1))


def _normalise(tag: str, name: str, value: str, where: str) -> str:
    """Validate one attribute value and return what eSpeak gets."""
    where = f"{where} <{tag} {name}>"
    if name == "xmlns":
        if value != SSML_NAMESPACE:
            raise _fail(where, f"namespace must be {SSML_NAMESPACE}")
        return value
    if name == "version":
        if value not in ("1.0", "1.1"):
            raise _fail(where, "version must be 1.0 or 1.1")
        return value
    if name == "xml:lang":
        if not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*", value):
            raise _fail(where, f"{value!r} is not a BCP-47 tag")
        return value
    if name == "time":
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", value)
        millis = float(match.group(1)) * (1 if match.group(2) == "ms" else 1000) if match else -1
        if not 0 <= millis <= _MAX_BREAK_MS:
            raise _fail(where, f"time {value!r} must be like 250ms or 1.5s, at most 10 s")
        return f"{round(millis)}ms"
    if name == "alias":
        if not value.strip() or len(value) > 1000:
            raise _fail(where, "alias must be non-empty text (at most 1000 characters)")
        return value
    if name == "alphabet":
        if value != "x-espeak":
            raise _fail(where, f"alphabet {value!r} is not supported (only x-espeak)")
        return value
    if name == "ph":
        try:
            return check_phonemes(value, where)
        except TextError as exc:
            raise TextError("SSML_INVALID", exc.message) from exc
    if value in _KEYWORDS.get(name, ()):
        return value
    if name == "rate":
        return f"{_number(value, _PERCENT, where, 20, 400):g}%"
    if name == "pitch":
        match = re.fullmatch(r"([+-])(\d+(?:\.\d+)?)%", value)
        if not match or float(match.group(2)) > 100:
            raise _fail(where, f"pitch {value!r} must be a keyword or +N%/-N% with N <= 100")
        return f"{match.group(1)}{float(match.group(2)):g}%"
    if name == "volume":
        match = re.fullmatch(r"([+-]\d+(?:\.\d+)?)dB", value)
        decibels = float(match.group(1)) if match else None
        if decibels is None or not -40 <= decibels <= 20:
            raise _fail(where, f"volume {value!r} must be a keyword or +NdB/-NdB in [-40, +20]")
        # eSpeak takes volume as a percentage of the normal amplitude.
        return f"{round(100 * 10 ** (decibels / 20))}%"
    raise _fail(where, f"value {value!r} is not accepted")


class _TreeBuilder:
    """expat callbacks -> a validated _Element tree with source positions."""

    def __init__(self, document: str, elements: frozenset[str] = SSML_ELEMENTS) -> None:
        self._elements = elements
        self._raw = document.encode("utf-8")
        self._char_at = _byte_to_char_table(document)
        self._parser = expat.ParserCreate("UTF-8")
        self._parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._parser.CharacterDataHandler = self._data
        self._parser.StartDoctypeDeclHandler = self._refuse_declaration
        self._parser.EntityDeclHandler = self._refuse_declaration
        self._parser.ProcessingInstructionHandler = self._refuse_instruction
        self._stack: list[_Element] = []
        self.root: _Element | None = None
        self._open_text: _Text | None = None  # a non-exact text whose source end is pending

    def parse(self) -> _Element:
        try:
            self._parser.Parse(self._raw, True)
        except expat.ExpatError as exc:
            message = expat.ErrorString(exc.code)
            raise TextError(
                "SSML_INVALID",
                f"line {exc.lineno}, column {exc.offset + 1}: malformed XML: {message}",
            ) from exc
        self._close_text(len(self._raw))
        if self.root is None:
            raise TextError("SSML_INVALID", "empty document: the root must be <speak>")
        return self.root

    def _where(self) -> str:
        return (
            f"line {self._parser.CurrentLineNumber}, column {self._parser.CurrentColumnNumber + 1}"
        )

    def _here(self) -> int:
        return self._char_at[self._parser.CurrentByteIndex]

    def _close_text(self, byte_index: int) -> None:
        if self._open_text is not None:
            self._open_text.end = self._char_at[byte_index]
            self._open_text = None

    def _refuse_declaration(self, *_: Any) -> None:
        raise TextError(
            "SSML_INVALID", f"{self._where()}: DTD and entity declarations are not allowed"
        )

    def _refuse_instruction(self, target: str, _data: str) -> None:
        raise TextError(
            "SSML_INVALID", f"{self._where()}: processing instruction <?{target}?> is not allowed"
        )

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        self._close_text(self._parser.CurrentByteIndex)
        where = self._where()
        if tag not in _ATTRIBUTES or tag not in self._elements:
            raise _fail(where, f"unknown element <{tag}>")
        parent = self._stack[-1] if self._stack else None
        self._check_placement(tag, parent, where)
        unknown = sorted(set(attrs) - _ATTRIBUTES[tag])
        if unknown:
            raise _fail(where, f"unknown attribute {unknown[0]!r} on <{tag}>")
        missing = [a for a in _REQUIRED.get(tag, ()) if a not in attrs]
        if missing:
            raise _fail(where, f"<{tag}> needs the attribute {missing[0]!r}")
        values = {name: _normalise(tag, name, value, where) for name, value in attrs.items()}
        element = _Element(tag, values, self._here())
        if parent is None:
            self.root = element
        else:
            parent.children.append(element)
        self._stack.append(element)

    def _check_placement(self, tag: str, parent: _Element | None, where: str) -> None:
        if parent is None:
            if tag != "speak" or self.root is not None:
                raise _fail(where, f"the root element must be <speak>, not <{tag}>")
            return
        if parent.tag in _TEXT_ONLY or parent.tag == "break":
            raise _fail(where, f"<{tag}> is not allowed inside <{parent.tag}> (text only)")
        for ancestor in self._stack:
            if ancestor.tag in _NOT_INSIDE.get(tag, ()):
                raise _fail(where, f"<{tag}> is not allowed inside <{ancestor.tag}>")

    def _end(self, _tag: str) -> None:
        self._close_text(self._parser.CurrentByteIndex)
        self._stack.pop()

    def _data(self, data: str) -> None:
        byte_index = self._parser.CurrentByteIndex
        self._close_text(byte_index)
        if not self._stack:
            return  # whitespace around the root (anything else is an expat error)
        element = self._stack[-1]
        if element.tag == "break":
            if data.strip():
                raise _fail(self._where(), "<break> must be empty")
            return
        start = self._char_at[byte_index]
        encoded = data.encode("utf-8")
        if self._raw[byte_index : byte_index + len(encoded)] == encoded:
            text = _Text(data, start, start + len(data), exact=True)
            previous = element.children[-1] if element.children else None
            if isinstance(previous, _Text) and previous.exact and previous.end == start:
                previous.text += data  # expat splits text at newlines; rejoin for matching
                previous.end = text.end
                return
        else:
            text = _Text(data, start, start, exact=False)  # entity or normalised newline
            self._open_text = text
        element.children.append(text)


def _byte_to_char_table(document: str) -> list[int]:
    table = []
    for index, char in enumerate(document):
        table.extend([index] * len(char.encode("utf-8")))
    table.append(len(document))
    return table


def parse_ssml(document: str, elements: frozenset[str] = SSML_ELEMENTS) -> _Element:
    """Validate ``document`` completely, accepting only ``elements`` (nothing is spoken if
    this raises TextError)."""
    if _DECLARATION.search(document):
        raise TextError("SSML_INVALID", "DTD and entity declarations are not allowed")
    return _TreeBuilder(document, elements).parse()


def ssml_text(
    document: str,
    pronunciations: tuple[Pronunciation, ...],
    elements: frozenset[str] = SSML_ELEMENTS,
) -> MappedText:
    """Validated SSML rewritten for eSpeak (espeakSSML flag), mapped to ``document``."""
    root = parse_ssml(document, elements)
    out = MappedText()
    out.flags |= ESPEAK_FLAG_SSML
    _emit(root, out, TextEmitter(out, pronunciations, ssml=True))
    return out


def _open_tag(element: _Element) -> str:
    attrs = "".join(
        f' {k}="{v}"' for k, v in element.attrs.items() if k not in ("xmlns", "version", "xml:lang")
    )
    return f"<{element.tag}{attrs}>"


def _emit(element: _Element, out: MappedText, emitter: TextEmitter) -> None:
    tag = element.tag
    if tag == "break":
        out.markup(_open_tag(element)[:-1] + "/>")
        return
    if tag == "sub":
        start, end = element.content_span()
        emitter.block(f" {element.attrs['alias']} ", start, end)
        return
    if tag == "phoneme":
        start, end = element.content_span()
        out.block(f" [[{element.attrs['ph']}]] ", start, end)
        out.flags |= ESPEAK_FLAG_PHONEMES
        return
    wrapper = _wrapper(element)
    if wrapper:
        out.markup(wrapper[0])
    for child in _joined_breaks(element.children):
        if isinstance(child, _Element):
            _emit(child, out, emitter)
        elif child.exact:
            emitter.text(child.text, child.start)
        else:
            emitter.block(child.text, child.start, child.end)
    if wrapper:
        out.markup(wrapper[1])


def _timed_break(node: _Element | _Text) -> int | None:
    """A ``<break time>``'s milliseconds (time wins over strength, SSML 1.1 3.2.3); else None."""
    if isinstance(node, _Element) and node.tag == "break" and "time" in node.attrs:
        return int(node.attrs["time"].removesuffix("ms"))
    return None


def _joined_breaks(children: list[_Element | _Text]) -> list[_Element | _Text]:
    """``children`` with each run of timed breaks that only whitespace separates made one break
    of their summed time. eSpeak keeps only the longest of breaks that touch (measured:
    ``<break time="3s"/><break time="3s"/>`` is 3 s of silence, not 6), and a client asking for
    more than the 10 s one break may hold chains them, as other TTS APIs document. A break
    given by strength alone is left as it is (eSpeak's length for it is its own)."""
    joined: list[_Element | _Text] = []
    i, n = 0, len(children)
    while i < n:
        first = children[i]
        total = _timed_break(first)
        if total is None:
            joined.append(first)
            i += 1
            continue
        last, j = i, i + 1
        while j < n:
            node = children[j]
            if isinstance(node, _Text) and not node.text.strip():
                j += 1
                continue
            more = _timed_break(node)
            if more is None:
                break
            total += more
            last, j = j, j + 1
        assert isinstance(first, _Element)
        if last == i:
            joined.append(first)
        else:
            joined.append(_Element("break", {"time": f"{total}ms"}, first.position))
        i = last + 1  # the whitespace after the run's last break stays
    return joined


def _wrapper(element: _Element) -> tuple[str, str] | None:
    """eSpeak markup around an element's content (None: content only)."""
    tag = element.tag
    if tag == "say-as":
        kind = element.attrs["interpret-as"]
        if kind in ("characters", "spell-out"):
            return '<say-as interpret-as="characters">', "</say-as>"
        if kind == "digits":
            return '<say-as interpret-as="tts:digits">', "</say-as>"  # eSpeak's own name
        return None  # cardinal/number: eSpeak reads numerals as cardinals already
    if tag == "speak":
        return "<speak>", "</speak>"
    return _open_tag(element), f"</{tag}>"
