-- The change feed: one row per committed change of the ledger, written in the transaction that
-- makes the change, numbered by `sequence`.
--
-- Every writer of this table holds `ledger_writer` in EXCLUSIVE mode (the transfer engine's
-- batches, account opening and closing), so sequences are taken in commit order: once a reader
-- sees sequence n committed, every smaller one has committed or never will (a writer that rolls
-- back leaves a gap). That is what lets the relay and the watch streams read "after the last one
-- I saw" and never skip an event.
--
-- No foreign keys: the rows are written from the transfers and accounts of the same transaction
-- by the same statement sequence, on the hot path (three more index probes per transfer);
-- `tally verify` checks that every event names a stored transfer or account and that every
-- recorded transfer has its `transfer.created` event.
CREATE TABLE ledger_events (
    sequence                     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type                         text        NOT NULL,
    -- The transaction's time: a transfer's `created_at`, a post's or void's moment.
    occurred_at                  timestamptz NOT NULL DEFAULT now(),
    -- The account a transfer event debits (its source), or the account of an account event.
    account_id                   uuid        NOT NULL,
    -- The account a transfer event credits (its destination); NULL for an account event.
    counterparty_id              uuid,
    transfer_id                  uuid,
    -- The transfer's state right after the event (its reversed sum is then always 0: only a
    -- settled transfer is reversed, and it has no event after).
    status                       text,
    posted_amount                bigint,
    -- Both positions right after the event.
    account_balance              bigint      NOT NULL,
    account_pending_debits       bigint      NOT NULL,
    account_pending_credits      bigint      NOT NULL,
    counterparty_balance         bigint,
    counterparty_pending_debits  bigint,
    counterparty_pending_credits bigint,
    CONSTRAINT ledger_events_type_known CHECK (type IN (
        'transfer.created', 'transfer.posted', 'transfer.voided', 'transfer.expired',
        'account.opened', 'account.closed')),
    CONSTRAINT ledger_events_shape CHECK (CASE
        WHEN type LIKE 'transfer.%' THEN
            transfer_id IS NOT NULL AND counterparty_id IS NOT NULL AND status IS NOT NULL
            AND counterparty_balance IS NOT NULL AND counterparty_pending_debits IS NOT NULL
            AND counterparty_pending_credits IS NOT NULL
        ELSE
            transfer_id IS NULL AND counterparty_id IS NULL AND status IS NULL
            AND posted_amount IS NULL AND counterparty_balance IS NULL
            AND counterparty_pending_debits IS NULL AND counterparty_pending_credits IS NULL
        END),
    CONSTRAINT ledger_events_status_matches CHECK (
        type <> 'transfer.posted' OR (status = 'posted' AND posted_amount IS NOT NULL)),
    CONSTRAINT ledger_events_pending_nonnegative CHECK (
        account_pending_debits >= 0 AND account_pending_credits >= 0
        AND counterparty_pending_debits >= 0 AND counterparty_pending_credits >= 0)
);
COMMENT ON TABLE ledger_events IS
    'The change feed: written in the transaction of each change, under the ledger_writer lock, '
    'so sequence order is commit order (gaps are rolled-back writers).';
-- A watch stream replays one account's events: one ordered index scan per side.
CREATE INDEX ledger_events_account_idx ON ledger_events (account_id, sequence);
CREATE INDEX ledger_events_counterparty_idx ON ledger_events (counterparty_id, sequence)
    WHERE counterparty_id IS NOT NULL;

-- How far each relay has published: the Redis stream's relay (and the worker's sweep) start
-- after it, so a restart or a Redis outage publishes what is left, in order.
CREATE TABLE ledger_event_cursors (
    name              text   PRIMARY KEY,
    published_through bigint NOT NULL DEFAULT 0 CHECK (published_through >= 0)
);

-- Where the feed began: transfers recorded before this migration have no events (`tally
-- verify` checks the ones after).
CREATE TABLE ledger_feed_start (
    one                       boolean PRIMARY KEY DEFAULT true CHECK (one),
    after_transfer_seq        bigint  NOT NULL
);
INSERT INTO ledger_feed_start (after_transfer_seq) SELECT COALESCE(max(seq), 0) FROM transfers;
