"""Layer 3: the session lifecycle."""
