-- Installed next to ibkr_resilience.json (lnav runs the .sql files of its format
-- directories at startup). The format table keeps the event in log_body; this view
-- adds it back under its own name, so queries read like the JSON lines:
--   SELECT attempt, failure_class FROM ibkr_events WHERE event = 'ibkr.connect.failed'
CREATE VIEW IF NOT EXISTS ibkr_events AS
    SELECT log_body AS event, log_opid, log_raw_text, * FROM ibkr_resilience;
