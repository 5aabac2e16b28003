-- No change feed.
DROP TABLE ledger_feed_start;
DROP TABLE ledger_event_cursors;
DROP TABLE ledger_events;
