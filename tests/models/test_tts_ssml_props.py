"""tts_espeak's SSML parser and rewriter as pure functions, against drawn documents.

The parser takes untrusted text straight from a client (through the gateway and the adapter,
which pass SSML through unparsed): whatever it is given, it must answer with a ``TextError``
(a reason the contract knows) or with eSpeak markup that is well-formed XML, whose text maps
back into the client's document (word offsets come from that map). Any other exception would
fail the model's request as INTERNAL. The examples through a real Triton are in
test_tts_espeak.py; these need no server.
"""

from __future__ import annotations

import sys
from pathlib import Path
from xml.parsers import expat

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parents[2] / "model_repository" / "tts_espeak" / "1"))

from tts_ssml import SSML_ELEMENTS, ssml_text  # noqa: E402
from tts_text import MappedText, Pronunciation, TextError  # noqa: E402

from voxwire.errors import reasons  # noqa: E402

# 400 examples a test in `make test` (about a second each), 10,000 in `make fuzz`.
SETTINGS = settings(
    settings.default,
    max_examples=400 if settings.default.max_examples <= 60 else 10_000,
    suppress_health_check=[HealthCheck.too_slow],
)

WORDS = ["hello", "world", "nine", "42", "Dr.", "naïve", "日本", "a&b", "x<y", "it's", '"q"']
FRAGMENTS = [
    "<speak>", "</speak>", '<speak version="1.1" xml:lang="en-US">', "<p>", "</p>", "<s>", "</s>",
    '<break time="250ms"/>', '<break strength="strong"/>', '<break time="99s"/>', "<break>",
    '<prosody rate="fast">', '<prosody pitch="+10%">', '<prosody volume="-6dB">', "</prosody>",
    "<emphasis>", '<emphasis level="strong">', "</emphasis>",
    '<say-as interpret-as="characters">', '<say-as interpret-as="bogus">', "</say-as>",
    '<sub alias="World Wide Web">', '<sub alias="&lt;b&gt; &amp;">', "</sub>",
    '<phoneme alphabet="x-espeak" ph="h@l\'oU">', '<phoneme alphabet="ipa" ph="x">', "</phoneme>",
    "&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#65;", "&#x1F600;", "&#0;", "&nope;", "&",
    "<![CDATA[a<b]]>", "<!-- c -->", "<?pi x?>", '<?xml version="1.0"?>', "<!DOCTYPE speak>",
    '<!ENTITY e "x">', "<audio/>", "<mark name='m'/>", "<", ">", "/", "=", '"', "'", " ", "\n",
    "\t", "\r\n", "\x00", "\x0b", "\ufeff",
]  # fmt: skip


def _check(document: str, pronunciations: tuple[Pronunciation, ...] = ()) -> MappedText | None:
    """The rewrite, with its promises checked; None when the document is refused."""
    try:
        out = ssml_text(document, pronunciations)
    except TextError as exc:
        assert exc.reason in reasons() and exc.reason != "INTERNAL", exc.reason
        assert exc.message
        return None
    parser = expat.ParserCreate("UTF-8")
    parser.Parse(out.text.encode(), True)  # well-formed for eSpeak's SSML reader, or raises
    for piece in out._pieces:
        assert 0 <= piece.orig_start <= piece.orig_end <= len(document)
        if piece.exact:
            assert (
                out.text[piece.out_start : piece.out_end]
                == (document[piece.orig_start : piece.orig_end])
            )
    for start in range(0, len(out.text), 7):
        span = out.to_original(start, 3)
        if span is not None:
            assert 0 <= span[0] <= span[1] <= len(document)
    return out


@SETTINGS
@given(st.text(max_size=200))
def test_any_text_is_refused_or_rewritten_well_formed(document: str) -> None:
    _check(document)


@SETTINGS
@given(st.lists(st.sampled_from(FRAGMENTS + WORDS), max_size=40))
def test_any_mix_of_markup_is_refused_or_rewritten_well_formed(pieces: list[str]) -> None:
    _check("".join(pieces))


@st.composite
def _element(draw: st.DrawFn, depth: int, inside: frozenset[str]) -> str:
    """A valid element of the subset (nesting as tts_ssml allows it)."""
    choices = ["break", "prosody", "emphasis", "say-as", "sub"]
    if "p" not in inside and "s" not in inside:
        choices.append("p")
    if "s" not in inside:
        choices.append("s")
    tag = draw(st.sampled_from(choices))
    words = " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3)))
    words = words.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    if tag == "break":
        return draw(st.sampled_from(['<break time="300ms"/>', '<break strength="weak"/>']))
    if tag == "say-as":
        return f'<say-as interpret-as="characters">{words}</say-as>'
    if tag == "sub":
        return f'<sub alias="{words}">x</sub>'
    attrs = {"prosody": ' rate="slow" pitch="-5%"', "emphasis": ' level="moderate"'}.get(tag, "")
    children = [words]
    if depth < 4:
        children += draw(st.lists(_element(depth + 1, inside | {tag}), max_size=3))
    return f"<{tag}{attrs}>{' '.join(children)}</{tag}>"


@SETTINGS
@given(st.lists(_element(0, frozenset()), min_size=1, max_size=4), st.booleans())
def test_documents_of_the_subset_are_spoken(elements: list[str], pronounce: bool) -> None:
    document = f"<speak>{' '.join(elements)}</speak>"
    entries = (Pronunciation("world", "w'3:ld"),) if pronounce else ()
    assert _check(document, entries) is not None, document


@SETTINGS
@given(
    st.lists(_element(0, frozenset()), min_size=1, max_size=3),
    st.integers(min_value=0),
    st.sampled_from(["delete", "insert", "cut"]),
    st.sampled_from(["<", ">", "&", '"', "/", "=", " ", "x", "]", "\x00"]),
)
def test_a_valid_document_damaged_anywhere_is_refused_or_spoken(
    elements: list[str], at: int, how: str, char: str
) -> None:
    document = f"<speak>{' '.join(elements)}</speak>"
    i = at % (len(document) + 1)
    damaged = {
        "delete": document[:i] + document[i + 1 :],
        "insert": document[:i] + char + document[i:],
        "cut": document[:i],
    }[how]
    _check(damaged)


def test_the_subset_is_what_the_model_publishes() -> None:
    config = Path(__file__).parents[2] / "model_repository" / "tts_espeak" / "config.pbtxt"
    published = next(
        line for line in config.read_text().splitlines() if "voxwire.ssml_elements" in line
    )
    listed = published.split('string_value: "')[1].split('"')[0].split(",")
    assert set(listed) <= SSML_ELEMENTS


@given(
    st.lists(st.integers(0, 10_000), min_size=1, max_size=6),
    st.lists(st.sampled_from(["", " ", "\n", "  \t"]), min_size=6, max_size=6),
)
@SETTINGS
def test_breaks_that_touch_become_one_of_their_summed_time(
    times: list[int], gaps: list[str]
) -> None:
    # eSpeak keeps only the longest of breaks with nothing but whitespace between them: two
    # 3 s breaks were 3 s of silence. A client chains them for a pause longer than the 10 s
    # one break may hold.
    run = "".join(f'<break time="{ms}ms"/>{gap}' for ms, gap in zip(times, gaps, strict=False))
    out = ssml_text(f"<speak>one {run}two</speak>", ())
    assert out.text.count("<break") == 1, out.text
    assert f'<break time="{sum(times)}ms"/>' in out.text, out.text


def test_breaks_with_words_or_a_strength_between_stay_apart() -> None:
    apart = '<speak>a <break time="3s"/> b <break time="2s"/><break strength="weak"/>'
    apart += '<break time="1s"/> c</speak>'
    out = ssml_text(apart, ())
    assert out.text.count("<break") == 4, out.text
    assert '<break time="3000ms"/> b <break time="2000ms"/>' in out.text, out.text
