"""A check's answer, and the registry of named property checks cases refer to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voxwire.conformance.driver import Outcome
    from voxwire.conformance.plan import Plan


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    evidence: str  # one line: what was seen


def passed(evidence: str) -> Verdict:
    return Verdict(True, evidence)


def failed(evidence: str) -> Verdict:
    return Verdict(False, evidence)


Property = Callable[["Outcome", "Plan"], Verdict]
PROPERTIES: dict[str, Property] = {}


def prop(name: str) -> Callable[[Property], Property]:
    """Register a property check under the name case files use."""

    def register(fn: Property) -> Property:
        PROPERTIES[name] = fn
        return fn

    return register
