-- Balance monitors (Modern Treasury's kind): a condition on an account's posted balance
-- (above or below a threshold) that fires a `balance_monitor.triggered` event (and so its
-- webhooks) on the change that makes it hold, not on every change while it keeps holding.
-- `triggered` is whether it held after the account's last change; the transfer engine reads
-- and updates it under the account's row lock, in the batch that moves the balance.
CREATE TABLE balance_monitors (
    id          uuid        PRIMARY KEY,
    account_id  uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_by  uuid        NOT NULL REFERENCES users (id),
    condition   text        NOT NULL CHECK (condition IN ('above', 'below')),
    -- Minor units; as far as a balance can go.
    threshold   bigint      NOT NULL
        CHECK (threshold BETWEEN -1000000000000000000 AND 1000000000000000000),
    triggered   boolean     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX balance_monitors_account_idx ON balance_monitors (account_id, id);

ALTER TABLE ledger_events ADD COLUMN monitor_id uuid;
ALTER TABLE ledger_events DROP CONSTRAINT ledger_events_type_known;
ALTER TABLE ledger_events ADD CONSTRAINT ledger_events_type_known CHECK (type IN (
    'transfer.created', 'transfer.posted', 'transfer.voided', 'transfer.expired',
    'account.opened', 'account.closed', 'balance_monitor.triggered'));
ALTER TABLE ledger_events ADD CONSTRAINT ledger_events_monitor_shape
    CHECK ((type = 'balance_monitor.triggered') = (monitor_id IS NOT NULL));

ALTER TABLE webhooks DROP CONSTRAINT webhooks_event_types_known;
ALTER TABLE webhooks ADD CONSTRAINT webhooks_event_types_known CHECK (event_types <@ ARRAY[
    'transfer.created', 'transfer.posted', 'transfer.voided', 'transfer.expired',
    'account.opened', 'account.closed', 'balance_monitor.triggered']::text[]);
