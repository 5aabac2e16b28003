-- Conversions between currencies: a liquidity account per currency (the counterparty of every
-- conversion leg, funded by bankers, never negative), the conversion kind of transfer with its
-- failure reasons, and the quote a conversion used, each used at most once.

ALTER TABLE accounts ADD COLUMN is_liquidity boolean NOT NULL DEFAULT false;
ALTER TABLE accounts DROP CONSTRAINT accounts_owner_xor_system;
ALTER TABLE accounts
    -- Owned by nobody: the system and the liquidity account of each currency.
    ADD CONSTRAINT accounts_owner_xor_system CHECK ((owner_id IS NULL) = (is_system OR is_liquidity)),
    ADD CONSTRAINT accounts_one_role CHECK (NOT (is_system AND is_liquidity));
-- (A liquidity account is not a system account, so accounts_customer_available_within_limit
-- keeps it at zero or above: a conversion it cannot pay fails INSUFFICIENT_LIQUIDITY.)
CREATE UNIQUE INDEX accounts_one_liquidity_account_per_currency ON accounts (currency)
    WHERE is_liquidity;

ALTER TABLE transfers DROP CONSTRAINT transfers_kind_known;
ALTER TABLE transfers DROP CONSTRAINT transfers_failure_has_reason;
ALTER TABLE transfers
    ADD CONSTRAINT transfers_kind_known
        CHECK (kind IN ('transfer', 'deposit', 'withdrawal', 'reversal', 'conversion')),
    ADD CONSTRAINT transfers_failure_has_reason CHECK (
        (status = 'failed' AND failure_reason IN ('insufficient_funds', 'currency_mismatch',
            'linked_transfer_failed', 'account_closed', 'insufficient_liquidity',
            'quote_expired', 'quote_used'))
        OR (status <> 'failed' AND failure_reason IS NULL));

-- Set in the transaction that converts with the quote; never cleared.
ALTER TABLE quotes ADD COLUMN conversion_id uuid UNIQUE;
