-- Back to per-row foreign keys (see the .up.sql).
DROP TRIGGER currencies_code_fixed ON currencies;
DROP TRIGGER currencies_refuse_delete_if_referenced ON currencies;
DROP FUNCTION currencies_refuse_if_referenced();
DROP TRIGGER users_id_fixed ON users;
DROP TRIGGER users_refuse_delete_if_referenced ON users;
DROP FUNCTION users_refuse_if_referenced();
DROP TRIGGER entries_never_change ON entries;
DROP TRIGGER transfers_id_fixed ON transfers;
DROP TRIGGER transfers_never_deleted ON transfers;
DROP TRIGGER accounts_id_fixed ON accounts;
DROP TRIGGER accounts_never_deleted ON accounts;
DROP FUNCTION ledger_refuse_change();
DROP TRIGGER entries_check_references ON entries;
DROP FUNCTION entries_check_references();
DROP TRIGGER transfers_check_references ON transfers;
DROP FUNCTION transfers_check_references();
DROP FUNCTION ledger_refuse_reference(text, text);

ALTER TABLE transfers
    ADD CONSTRAINT transfers_requested_by_fkey FOREIGN KEY (requested_by) REFERENCES users (id),
    ADD CONSTRAINT transfers_from_account_id_fkey
        FOREIGN KEY (from_account_id) REFERENCES accounts (id),
    ADD CONSTRAINT transfers_to_account_id_fkey FOREIGN KEY (to_account_id) REFERENCES accounts (id),
    ADD CONSTRAINT transfers_currency_fkey FOREIGN KEY (currency) REFERENCES currencies (code);
ALTER TABLE entries
    ADD CONSTRAINT entries_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts (id),
    ADD CONSTRAINT entries_transfer_id_fkey FOREIGN KEY (transfer_id) REFERENCES transfers (id);
