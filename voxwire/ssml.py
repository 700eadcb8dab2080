"""SSML a client sends without saying so.

An SSML document's root is ``<speak>``, after an optional XML declaration (W3C SSML 1.1,
section 2.1). Sent as plain text, its markup is spoken as words ("less than speak greater
than"), which its writer never meant: the CLI sends such text as SSML unless told otherwise,
and the adapter tells a client that declared it plain (a StreamNotice KIND_FORMAT_SUSPECT).
"""

from __future__ import annotations

SSML_STARTS = ("<speak", "<?xml")


def looks_like_ssml(text: str) -> bool:
    """Whether ``text`` opens an SSML document (after white space and a byte order mark, which
    is no text: a document saved by a Windows editor starts with one)."""
    return text.lstrip().lstrip("\ufeff").lstrip().startswith(SSML_STARTS)
