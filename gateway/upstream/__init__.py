"""The adapters behind the gateway: channels, health, choice, one call."""
