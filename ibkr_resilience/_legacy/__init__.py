"""Layer 4: the old connect()/get_account()/disconnect() API."""
