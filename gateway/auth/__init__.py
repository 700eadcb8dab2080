"""Auth and limits of the gateway: API keys, browser and resume tokens, per-key session limits.

Nothing here does network I/O or depends on the HTTP framework: inputs are plain values
(header pairs, subprotocol lists, origin strings, clocks), outputs are values or voxwire errors
(``Unauthenticated``, ``PermissionDenied``, ``RateLimited``, ``ResumeRejected``). The only I/O
is the keys file (read on ``KeyStore.reload_if_changed``, a few hundred bytes per key; call it
off the hot path, e.g. from a timer every ``keys_reload_interval_s``).

    keys.py          key format, hashes, the keys file's entries, KeyStore (reload on change)
    keys_file.py     the TOML file: atomic locked writes, change signature
    origins.py       RFC 6454 origins: normalize, match
    tokens.py        HMAC-SHA256 signer with kid rotation; BrowserTokens; ResumeTokens
    limits.py        SessionLimiter: concurrent sessions (permits), new sessions per minute (GCRA)
    authenticate.py  Authenticator: headers + subprotocols + Origin -> Principal
    redaction.py     redact() and RedactingFilter: keys and tokens never reach a log
    config.py        AuthConfig, the [auth] settings
"""
