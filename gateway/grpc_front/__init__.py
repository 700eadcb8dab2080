"""The gateway's gRPC front: ``voxwire.v1`` for server-side callers, behind the edge's auth.

server.py   GrpcFront: the grpc.aio server, admission, health, reflection, TLS
relay.py    one call relayed to an adapter as raw bytes (status and trailers unchanged)
"""
