"""Layer 2: side channels that must never fail the job (alerts, de-dup, healthcheck)."""
