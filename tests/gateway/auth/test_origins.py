"""RFC 6454 origins: normalization and matching against a key's list."""

from __future__ import annotations

import pytest

from gateway.auth.origins import normalize_allowed, normalize_origin, origin_allowed


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("https://app.example", "https://app.example"),
        ("HTTPS://App.Example:443", "https://app.example"),
        ("http://app.example:80", "http://app.example"),
        ("http://app.example:8080", "http://app.example:8080"),
        ("https://[::1]:8443", "https://[::1]:8443"),
        ("null", "null"),
    ],
)
def test_normalize(given: str, normalized: str):
    assert normalize_origin(given) == normalized


@pytest.mark.parametrize(
    "bad",
    [
        "app.example",
        "https://app.example/",
        "https://app.example/path",
        "https://app.example?q=1",
        "https://user@app.example",
        "ftp://app.example",
        "https://app.example:99999",
        "https://bücher.example",
        "https://app .example",
        "*",
        "",
    ],
)
def test_not_an_origin(bad: str):
    with pytest.raises(ValueError):
        normalize_origin(bad)


def test_matching():
    allowed = normalize_allowed(["https://App.example", "http://localhost:3000"])
    assert allowed == ("https://app.example", "http://localhost:3000")
    assert origin_allowed("https://app.example:443", allowed)
    assert not origin_allowed("https://app.example.evil", allowed)
    assert not origin_allowed("http://app.example", allowed)
    assert not origin_allowed("http://localhost:3001", allowed)
    assert not origin_allowed("null", allowed)
    anything = normalize_allowed(["*"])
    assert origin_allowed("https://x.example", anything) and origin_allowed("null", anything)
    assert not origin_allowed("https://x.example/not-an-origin", anything)
    assert not origin_allowed("https://x.example", ())
