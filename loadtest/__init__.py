"""voxwire's load tester for real-time bidi speech streams (docs/design/loadtest.md)."""
