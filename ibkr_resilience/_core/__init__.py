"""Layer 0: settings, errors' neighbours, redaction, state directory, logging setup."""
