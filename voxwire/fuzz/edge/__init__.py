"""The edge fuzzer: hostile and valid WebSocket sessions and HTTP requests against a gateway
(``python -m voxwire.fuzz.edge``; ``make fuzz-edge``; docs/fuzzing.md, "The edge")."""
