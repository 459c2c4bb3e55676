"""Layer 1: one connection (client library, attempt, retry policy, hints)."""
