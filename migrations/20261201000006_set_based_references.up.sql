-- The references of transfers and entries, checked once per statement instead of once per row.
--
-- A foreign key checks each inserted row with its own query (an SPI call per row and per key):
-- in a profile of a batch of 800 transfers it was a third of PostgreSQL's time, more than the
-- inserts themselves. These constraint triggers check a whole INSERT at once, from its
-- transition table, with the same guarantees:
--
-- 1. on INSERT into transfers or entries: every referenced account, user, currency and
--    transfer exists; otherwise SQLSTATE 23503 (foreign_key_violation), naming the check.
--    Users and currencies are locked FOR KEY SHARE, as a foreign key would lock them, so that
--    they cannot be deleted or re-keyed before this transaction ends. Accounts and transfers
--    need no lock: nothing can delete or re-key them (2);
-- 2. on the referenced side, what a foreign key's NO ACTION would refuse: a user or currency is
--    not deleted, nor its key changed, while a transfer names it; accounts and transfers (the
--    ledger never deletes them) are not deleted at all and their ids never change; entries
--    never change (SQLSTATE 23001, restrict_violation).
--
-- The unique and CHECK constraints are unchanged. `tally verify` still checks every balance
-- against its entries.

ALTER TABLE entries
    DROP CONSTRAINT entries_account_id_fkey,
    DROP CONSTRAINT entries_transfer_id_fkey;
ALTER TABLE transfers
    DROP CONSTRAINT transfers_requested_by_fkey,
    DROP CONSTRAINT transfers_from_account_id_fkey,
    DROP CONSTRAINT transfers_to_account_id_fkey,
    DROP CONSTRAINT transfers_currency_fkey;

CREATE FUNCTION ledger_refuse_reference(constraint_name text, detail text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'foreign_key_violation',
        CONSTRAINT = constraint_name,
        MESSAGE = format('violates the references of %s', constraint_name),
        DETAIL = detail;
END
$$;

CREATE FUNCTION transfers_check_references() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint;
    found bigint;
BEGIN
    SELECT count(*) INTO wanted FROM (
        SELECT from_account_id FROM new_rows UNION SELECT to_account_id FROM new_rows) k;
    SELECT count(*) INTO found FROM accounts WHERE id IN (
        SELECT from_account_id FROM new_rows UNION SELECT to_account_id FROM new_rows);
    IF found <> wanted THEN
        PERFORM ledger_refuse_reference('transfers_accounts_exist',
            'a transfer names an account that does not exist');
    END IF;
    SELECT count(DISTINCT requested_by) INTO wanted FROM new_rows;
    SELECT count(*) INTO found FROM (
        SELECT 1 FROM users WHERE id IN (SELECT requested_by FROM new_rows) FOR KEY SHARE) k;
    IF found <> wanted THEN
        PERFORM ledger_refuse_reference('transfers_requested_by_exists',
            'a transfer names a requester that does not exist');
    END IF;
    SELECT count(DISTINCT currency) INTO wanted FROM new_rows;
    SELECT count(*) INTO found FROM (
        SELECT 1 FROM currencies WHERE code IN (SELECT currency FROM new_rows) FOR KEY SHARE) k;
    IF found <> wanted THEN
        PERFORM ledger_refuse_reference('transfers_currency_exists',
            'a transfer names a currency that does not exist');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER transfers_check_references AFTER INSERT ON transfers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION transfers_check_references();

CREATE FUNCTION entries_check_references() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint;
    found bigint;
BEGIN
    SELECT count(DISTINCT account_id) INTO wanted FROM new_rows;
    SELECT count(*) INTO found FROM accounts WHERE id IN (SELECT account_id FROM new_rows);
    IF found <> wanted THEN
        PERFORM ledger_refuse_reference('entries_account_exists',
            'an entry names an account that does not exist');
    END IF;
    SELECT count(DISTINCT transfer_id) INTO wanted FROM new_rows;
    SELECT count(*) INTO found FROM transfers WHERE id IN (SELECT transfer_id FROM new_rows);
    IF found <> wanted THEN
        PERFORM ledger_refuse_reference('entries_transfer_exists',
            'an entry names a transfer that does not exist');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER entries_check_references AFTER INSERT ON entries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION entries_check_references();

-- The referenced side. Accounts, transfers and entries are never deleted, their ids never
-- change, and entries never change at all.
CREATE FUNCTION ledger_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'restrict_violation',
        MESSAGE = format('%s on %s refused: %s', TG_OP, TG_TABLE_NAME, TG_ARGV[0]);
END
$$;

CREATE TRIGGER accounts_never_deleted BEFORE DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change('transfers and entries name them');
CREATE TRIGGER accounts_id_fixed BEFORE UPDATE OF id ON accounts
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION ledger_refuse_change('transfers and entries name them');
CREATE TRIGGER transfers_never_deleted BEFORE DELETE ON transfers
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change('entries name them');
CREATE TRIGGER transfers_id_fixed BEFORE UPDATE OF id ON transfers
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION ledger_refuse_change('entries name them');
CREATE TRIGGER entries_never_change BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change('the ledger is append-only');

-- Users and currencies may go only while no transfer names them (a sequential scan of
-- transfers: neither ever happens on a request path).
CREATE FUNCTION users_refuse_if_referenced() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM transfers t JOIN old_rows o ON t.requested_by = o.id) THEN
        PERFORM ledger_refuse_reference('transfers_requested_by_exists',
            'a transfer names this user as its requester');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER users_refuse_delete_if_referenced AFTER DELETE ON users
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION users_refuse_if_referenced();
CREATE TRIGGER users_id_fixed BEFORE UPDATE OF id ON users
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION ledger_refuse_change('transfers, accounts and sessions name them');

CREATE FUNCTION currencies_refuse_if_referenced() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM transfers t JOIN old_rows o ON t.currency = o.code) THEN
        PERFORM ledger_refuse_reference('transfers_currency_exists',
            'a transfer is in this currency');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER currencies_refuse_delete_if_referenced AFTER DELETE ON currencies
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION currencies_refuse_if_referenced();
CREATE TRIGGER currencies_code_fixed BEFORE UPDATE OF code ON currencies
    FOR EACH ROW WHEN (OLD.code IS DISTINCT FROM NEW.code)
    EXECUTE FUNCTION ledger_refuse_change('accounts and transfers name them');
