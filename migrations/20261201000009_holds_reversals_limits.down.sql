-- Back to immediate transfers only. Refuses (by the restored CHECKs) while holds, reversals,
-- overdrafts or closed accounts exist.
UPDATE roles SET permissions = array_remove(permissions, 'accounts.manage')
    WHERE name IN ('banker', 'admin');
UPDATE roles SET description = 'Reads every account and transfer, deposits, withdraws, opens '
    'accounts and moves money for anyone.' WHERE name = 'banker';
DROP TRIGGER transfers_settle_only ON transfers;
DROP FUNCTION transfers_settle_only();
DROP FUNCTION ledger_refuse_transfer_change(text);

DROP TRIGGER transfers_check_reversed ON transfers;
DROP FUNCTION transfers_check_reversed();

DROP INDEX entries_account_time_idx;
DROP INDEX transfers_reverses_idx;
DROP INDEX transfers_pending_to_idx;
DROP INDEX transfers_pending_from_idx;
DROP INDEX transfers_pending_expiry_idx;

ALTER TABLE transfers
    DROP CONSTRAINT transfers_reversed_within_original,
    DROP CONSTRAINT transfers_reversal_shape,
    DROP CONSTRAINT transfers_posted_within_hold,
    DROP CONSTRAINT transfers_hold_shape,
    DROP CONSTRAINT transfers_failure_has_reason,
    DROP CONSTRAINT transfers_status_known,
    DROP CONSTRAINT transfers_kind_known;
ALTER TABLE transfers
    ADD CONSTRAINT transfers_kind_known CHECK (kind IN ('transfer', 'deposit', 'withdrawal')),
    ADD CONSTRAINT transfers_status_known CHECK (status IN ('succeeded', 'failed')),
    ADD CONSTRAINT transfers_failure_has_reason CHECK (
        (status = 'failed'
            AND failure_reason IN ('insufficient_funds', 'currency_mismatch', 'linked_transfer_failed'))
        OR (status = 'succeeded' AND failure_reason IS NULL));
ALTER TABLE transfers
    DROP COLUMN reversed_amount,
    DROP COLUMN reverses_transfer_id,
    DROP COLUMN posted_amount,
    DROP COLUMN expires_at,
    DROP COLUMN timeout_ms;

ALTER TABLE accounts
    DROP CONSTRAINT accounts_closed_empty,
    DROP CONSTRAINT accounts_customer_available_within_limit,
    DROP CONSTRAINT accounts_overdraft_limit_range,
    DROP CONSTRAINT accounts_pending_nonnegative;
ALTER TABLE accounts
    ADD CONSTRAINT accounts_customer_balance_nonnegative CHECK (is_system OR balance >= 0);
ALTER TABLE accounts
    DROP COLUMN closed_at,
    DROP COLUMN overdraft_limit,
    DROP COLUMN pending_credits,
    DROP COLUMN pending_debits;
