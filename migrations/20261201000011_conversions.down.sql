-- No conversions. Refuses (by the restored CHECKs) while conversion transfers or liquidity
-- accounts exist.
ALTER TABLE quotes DROP COLUMN conversion_id;
ALTER TABLE transfers DROP CONSTRAINT transfers_failure_has_reason;
ALTER TABLE transfers DROP CONSTRAINT transfers_kind_known;
ALTER TABLE transfers
    ADD CONSTRAINT transfers_kind_known
        CHECK (kind IN ('transfer', 'deposit', 'withdrawal', 'reversal')),
    ADD CONSTRAINT transfers_failure_has_reason CHECK (
        (status = 'failed' AND failure_reason IN ('insufficient_funds', 'currency_mismatch',
            'linked_transfer_failed', 'account_closed'))
        OR (status <> 'failed' AND failure_reason IS NULL));
DROP INDEX accounts_one_liquidity_account_per_currency;
ALTER TABLE accounts DROP CONSTRAINT accounts_one_role;
ALTER TABLE accounts DROP CONSTRAINT accounts_owner_xor_system;
ALTER TABLE accounts ADD CONSTRAINT accounts_owner_xor_system CHECK ((owner_id IS NULL) = is_system);
ALTER TABLE accounts DROP COLUMN is_liquidity;
