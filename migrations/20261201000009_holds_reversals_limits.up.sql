-- Holds (pending transfers), reversals, overdraft limits, closed accounts and point-in-time
-- balances. Each CHECK mirrors a rule of src/ledger/plan.rs.
--
-- Accounts:
-- - `pending_debits` / `pending_credits`: the sums of the live holds out of and into the
--   account (`tally verify` recomputes them from `transfers`);
-- - `overdraft_limit`: how far the available balance (balance − pending debits) of a customer
--   account may go below zero (default 0: never);
-- - `closed_at`: a closed account is empty, holds nothing, and takes no new transfers.
--
-- Transfers:
-- - a hold is a transfer created with `timeout_ms`: status `pending` (no entries yet) until it is
--   posted (all or part of it; entries then), voided, or expires at `expires_at`. Only these
--   transitions are allowed (`transfers_settle_only`); nothing else of a transfer ever changes;
-- - a reversal (kind `reversal`) moves money back from the original's destination to its source
--   and names the original; `reversed_amount` on the original is the sum of its succeeded
--   reversals and never exceeds what the original moved.

ALTER TABLE accounts
    ADD COLUMN pending_debits  bigint      NOT NULL DEFAULT 0,
    ADD COLUMN pending_credits bigint      NOT NULL DEFAULT 0,
    ADD COLUMN overdraft_limit bigint      NOT NULL DEFAULT 0,
    ADD COLUMN closed_at       timestamptz;

ALTER TABLE accounts DROP CONSTRAINT accounts_customer_balance_nonnegative;
ALTER TABLE accounts
    ADD CONSTRAINT accounts_pending_nonnegative CHECK (pending_debits >= 0 AND pending_credits >= 0),
    ADD CONSTRAINT accounts_overdraft_limit_range
        CHECK (overdraft_limit BETWEEN 0 AND 1000000000000000 AND (NOT is_system OR overdraft_limit = 0)),
    -- Customer accounts: the available balance stays within the overdraft limit.
    ADD CONSTRAINT accounts_customer_available_within_limit
        CHECK (is_system OR balance - pending_debits >= -overdraft_limit),
    ADD CONSTRAINT accounts_closed_empty CHECK (closed_at IS NULL
        OR (NOT is_system AND balance = 0 AND pending_debits = 0 AND pending_credits = 0));

ALTER TABLE transfers
    ADD COLUMN timeout_ms           bigint,
    ADD COLUMN expires_at           timestamptz,
    ADD COLUMN posted_amount        bigint,
    ADD COLUMN reverses_transfer_id uuid,
    ADD COLUMN reversed_amount      bigint NOT NULL DEFAULT 0;

ALTER TABLE transfers DROP CONSTRAINT transfers_kind_known;
ALTER TABLE transfers DROP CONSTRAINT transfers_status_known;
ALTER TABLE transfers DROP CONSTRAINT transfers_failure_has_reason;
ALTER TABLE transfers
    ADD CONSTRAINT transfers_kind_known
        CHECK (kind IN ('transfer', 'deposit', 'withdrawal', 'reversal')),
    ADD CONSTRAINT transfers_status_known
        CHECK (status IN ('succeeded', 'failed', 'pending', 'posted', 'voided', 'expired')),
    ADD CONSTRAINT transfers_failure_has_reason CHECK (
        (status = 'failed' AND failure_reason IN ('insufficient_funds', 'currency_mismatch',
            'linked_transfer_failed', 'account_closed'))
        OR (status <> 'failed' AND failure_reason IS NULL)),
    -- A hold: a timeout (at most a week), and an expiry once it was accepted.
    ADD CONSTRAINT transfers_hold_shape CHECK (
        (timeout_ms IS NULL OR timeout_ms BETWEEN 1 AND 604800000)
        AND ((status IN ('pending', 'posted', 'voided', 'expired')) = (expires_at IS NOT NULL))
        AND (expires_at IS NULL OR timeout_ms IS NOT NULL)),
    ADD CONSTRAINT transfers_posted_within_hold CHECK (
        (status = 'posted') = (posted_amount IS NOT NULL)
        AND (posted_amount IS NULL OR posted_amount BETWEEN 1 AND amount)),
    ADD CONSTRAINT transfers_reversal_shape CHECK (
        (kind = 'reversal') = (reverses_transfer_id IS NOT NULL)
        AND (kind <> 'reversal' OR timeout_ms IS NULL)),
    ADD CONSTRAINT transfers_reversed_within_original CHECK (
        reversed_amount >= 0
        AND reversed_amount <= COALESCE(posted_amount, amount)
        AND (reversed_amount = 0 OR status IN ('succeeded', 'posted')));

-- The sweeper finds expired holds by time, a batch finds the live holds of its accounts.
CREATE INDEX transfers_pending_expiry_idx ON transfers (expires_at) WHERE status = 'pending';
CREATE INDEX transfers_pending_from_idx ON transfers (from_account_id) WHERE status = 'pending';
CREATE INDEX transfers_pending_to_idx ON transfers (to_account_id) WHERE status = 'pending';
CREATE INDEX transfers_reverses_idx ON transfers (reverses_transfer_id)
    WHERE reverses_transfer_id IS NOT NULL;
-- Point-in-time balances: the last entry of an account at or before an instant, one probe.
CREATE INDEX entries_account_time_idx ON entries (account_id, created_at DESC, seq DESC);

-- A reversal names an existing transfer (checked per statement, like the other references;
-- the original may be inserted by the same statement).
CREATE FUNCTION transfers_check_reversed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint;
    found bigint;
BEGIN
    SELECT count(DISTINCT reverses_transfer_id) INTO wanted FROM new_rows;
    IF wanted > 0 THEN
        SELECT count(*) INTO found FROM transfers
            WHERE id IN (SELECT reverses_transfer_id FROM new_rows);
        IF found <> wanted THEN
            PERFORM ledger_refuse_reference('transfers_reversed_exists',
                'a reversal names a transfer that does not exist');
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER transfers_check_reversed AFTER INSERT ON transfers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION transfers_check_reversed();

CREATE FUNCTION ledger_refuse_transfer_change(message text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'restrict_violation',
        MESSAGE = format('UPDATE on transfers refused: %s', message);
END
$$;

-- What may change in a recorded transfer: a hold settles once (pending → posted, voided or
-- expired, with `posted_amount` set only by posting), and `reversed_amount` only grows.
CREATE FUNCTION transfers_settle_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.kind, NEW.requested_by, NEW.from_account_id, NEW.to_account_id, NEW.amount,
        NEW.currency, NEW.failure_reason, NEW.memo, NEW.fingerprint, NEW.created_at,
        NEW.timeout_ms, NEW.expires_at, NEW.reverses_transfer_id, NEW.seq)
       IS DISTINCT FROM
       (OLD.kind, OLD.requested_by, OLD.from_account_id, OLD.to_account_id, OLD.amount,
        OLD.currency, OLD.failure_reason, OLD.memo, OLD.fingerprint, OLD.created_at,
        OLD.timeout_ms, OLD.expires_at, OLD.reverses_transfer_id, OLD.seq) THEN
        PERFORM ledger_refuse_transfer_change('a recorded transfer never changes');
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status
       AND NOT (OLD.status = 'pending' AND NEW.status IN ('posted', 'voided', 'expired')) THEN
        PERFORM ledger_refuse_transfer_change(format('a %s transfer cannot become %s', OLD.status, NEW.status));
    END IF;
    IF NEW.posted_amount IS DISTINCT FROM OLD.posted_amount AND OLD.status <> 'pending' THEN
        PERFORM ledger_refuse_transfer_change('a posted amount is set once, by posting');
    END IF;
    IF NEW.reversed_amount < OLD.reversed_amount THEN
        PERFORM ledger_refuse_transfer_change('reversals are never undone');
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER transfers_settle_only BEFORE UPDATE ON transfers
    FOR EACH ROW EXECUTE FUNCTION transfers_settle_only();

-- Setting overdraft limits and closing accounts is the job of the new permission.
UPDATE roles SET permissions = array_append(permissions, 'accounts.manage')
    WHERE name IN ('banker', 'admin');
UPDATE roles SET description = 'Reads every account and transfer, deposits, withdraws, opens, '
    'limits and closes accounts and moves money for anyone.' WHERE name = 'banker';
