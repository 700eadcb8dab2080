"""The gateway's gRPC front: ``voxwire.v1`` for server-side callers, behind the edge's auth.

server.py      GrpcFront: the grpc.aio server, admission, health, reflection, TLS
stt_stream.py  StreamingTranscribe as an STT edge session (failover, as on the WebSocket)
tts_stream.py  StreamingSynthesize as a TTS edge session (failover, as on the WebSocket)
call_port.py   the session runners' client port over a gRPC call; the status of a close
relay.py       unary calls relayed to an adapter as raw bytes; the front's statuses
"""
