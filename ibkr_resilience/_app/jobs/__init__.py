"""The trading jobs: plan, journal, submit, close and their shared kit."""
