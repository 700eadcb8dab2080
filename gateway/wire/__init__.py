"""The edge wire formats: JSON messages, query-string configs, binary audio frames."""
