"""The voxwire.v1 conformance kit: the contract's own test suite, for any server.

``python -m voxwire.conformance --target host:port`` runs every case (``cases/*.toml``) and
prints promise, contract section, result and evidence; see docs/design/conformance.md. It uses
only the contract's shared code (stubs, the error table, the trailer names), never a server's.

    casefile   the case format: load, validate, select
    catalog    GetCapabilities: models per case, formats, limits
    plan       a case's steps resolved into messages (pure)
    driver     one stream: send, record, read to the end
    expect     built-in expectations (status, rich error, context errors, acks)
    stt_checks, tts_checks, stream_checks   named property checks
    probes     named procedures (Capabilities, health, reflection, every format)
    runner     run and judge cases (known-failing semantics)
    report     rich table and JSON
"""

from __future__ import annotations

from voxwire.conformance.runner import CaseResult, Options, Report, load_cases, run_kit

__all__ = ["CaseResult", "Options", "Report", "load_cases", "run_kit"]
