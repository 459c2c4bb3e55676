-- Installed next to ibkr_resilience.json (lnav runs the .sql files of its format
-- directories at startup). The format table keeps the event in log_body; this view
-- adds it back under its own name, so queries read like the JSON lines:
--   SELECT attempt, failure_class FROM ibkr_events WHERE event = 'ibkr.connect.failed'
-- A line that is not JSON (a traceback or a summary written into the same file) is a row
-- with log_level 'invalid'; jget() on its text would fail the whole query, so the view's
-- log_raw_text is NULL there: jget(log_raw_text, '/field') is NULL, not an error.
CREATE VIEW IF NOT EXISTS ibkr_events AS
    SELECT log_body AS event, log_opid,
           CASE WHEN json_valid(log_raw_text) THEN log_raw_text END AS log_raw_text,
           * FROM ibkr_resilience;
