-- No balance monitors. Refuses (by the restored CHECKs) while monitor events or webhooks
-- asking for them exist.
ALTER TABLE webhooks DROP CONSTRAINT webhooks_event_types_known;
ALTER TABLE webhooks ADD CONSTRAINT webhooks_event_types_known CHECK (event_types <@ ARRAY[
    'transfer.created', 'transfer.posted', 'transfer.voided', 'transfer.expired',
    'account.opened', 'account.closed']::text[]);
ALTER TABLE ledger_events DROP CONSTRAINT ledger_events_monitor_shape;
ALTER TABLE ledger_events DROP CONSTRAINT ledger_events_type_known;
ALTER TABLE ledger_events ADD CONSTRAINT ledger_events_type_known CHECK (type IN (
    'transfer.created', 'transfer.posted', 'transfer.voided', 'transfer.expired',
    'account.opened', 'account.closed'));
ALTER TABLE ledger_events DROP COLUMN monitor_id;
DROP TABLE balance_monitors;
