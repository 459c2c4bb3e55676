"""The paper-trading cron jobs."""
