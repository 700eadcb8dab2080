"""voxwire gateway: the public WebSocket / HTTP / gRPC edge (docs/design/edge.md)."""
