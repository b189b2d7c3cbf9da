"""Who may call what: API keys and their scopes (auth), rationed failed key checks (throttle),
and per-key requests and tokens per minute (ratelimit)."""
