"""The edge (gateway) wire: messages of package voxwire.edge.v1."""
