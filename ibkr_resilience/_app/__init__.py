"""Layer 5: the application (jobs, CLI, demo); nothing else imports it."""
