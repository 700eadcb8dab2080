"""Fuzzing for the voxwire.v1 contract (issue 8).

- ``oracle``: what a stream's responses must look like (shared with the session property tests)
- ``cases``: reproducible valid and hostile streams of raw request bytes
- ``client``: run one case over grpc.aio, classify its outcome
- ``probes``: leak and memory readings (Prometheus endpoints, RSS, logs, Triton sequence slots)
- ``runner`` / ``report``: the whole run and its figures; ``python -m voxwire.fuzz``

Usable against any voxwire.v1 server: nothing here imports the inference adapter.
"""
