-- The ledger: currencies, accounts, transfers and their entries.
-- The CHECK constraints mirror the rules in src/ledger/ (amounts positive, two different sides,
-- customer balances never negative, a failed transfer has a reason and no entries).

CREATE TABLE currencies (
    code     text     PRIMARY KEY,
    -- Minor units per major unit, as a power of ten (USD 2, JPY 0, BTC 8).
    exponent smallint NOT NULL,
    CONSTRAINT currencies_code_format CHECK (code ~ '^[A-Z]{3,5}$'),
    CONSTRAINT currencies_exponent_range CHECK (exponent BETWEEN 0 AND 18)
);

CREATE TABLE accounts (
    id         uuid        PRIMARY KEY,
    -- NULL only for the system account of a currency, the counterparty of deposits and
    -- withdrawals.
    owner_id   uuid        REFERENCES users (id),
    is_system  boolean     NOT NULL DEFAULT false,
    name       text        NOT NULL DEFAULT '',
    currency   text        NOT NULL REFERENCES currencies (code),
    -- Minor units. Equals the sum of the account's entries (`tally verify` checks).
    balance    bigint      NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_owner_xor_system CHECK ((owner_id IS NULL) = is_system),
    CONSTRAINT accounts_customer_balance_nonnegative CHECK (is_system OR balance >= 0),
    CONSTRAINT accounts_name_length CHECK (char_length(name) <= 64)
);

CREATE UNIQUE INDEX accounts_one_system_account_per_currency ON accounts (currency) WHERE is_system;
CREATE INDEX accounts_owner_id_idx ON accounts (owner_id, id);

CREATE TABLE transfers (
    -- Chosen by the client: the idempotency key (request_id for deposits and withdrawals).
    id              uuid        PRIMARY KEY,
    -- Insertion order, for keyset pagination newest first.
    seq             bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    kind            text        NOT NULL,
    -- Who asked: a replay by anyone else is refused, so ids cannot be used to read others'
    -- transfers.
    requested_by    uuid        NOT NULL REFERENCES users (id),
    from_account_id uuid        NOT NULL REFERENCES accounts (id),
    to_account_id   uuid        NOT NULL REFERENCES accounts (id),
    amount          bigint      NOT NULL,
    currency        text        NOT NULL REFERENCES currencies (code),
    status          text        NOT NULL,
    failure_reason  text,
    memo            text        NOT NULL DEFAULT '',
    -- SHA-256 of the request's payload: a replay must match it exactly.
    fingerprint     bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT transfers_kind_known CHECK (kind IN ('transfer', 'deposit', 'withdrawal')),
    CONSTRAINT transfers_amount_positive CHECK (amount > 0),
    CONSTRAINT transfers_sides_differ CHECK (from_account_id <> to_account_id),
    CONSTRAINT transfers_status_known CHECK (status IN ('succeeded', 'failed')),
    CONSTRAINT transfers_failure_has_reason CHECK (
        (status = 'failed' AND failure_reason IN ('insufficient_funds', 'currency_mismatch'))
        OR (status = 'succeeded' AND failure_reason IS NULL)),
    CONSTRAINT transfers_memo_length CHECK (char_length(memo) <= 256),
    CONSTRAINT transfers_fingerprint_length CHECK (octet_length(fingerprint) = 32)
);

CREATE INDEX transfers_from_account_idx ON transfers (from_account_id, seq DESC);
CREATE INDEX transfers_to_account_idx ON transfers (to_account_id, seq DESC);

CREATE TABLE entries (
    id            uuid        PRIMARY KEY,
    -- Application order: entries of one account are written under its row lock, so `seq`
    -- orders them as they were applied.
    seq           bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    account_id    uuid        NOT NULL REFERENCES accounts (id),
    transfer_id   uuid        NOT NULL REFERENCES transfers (id),
    -- Signed minor units: negative on the source, positive on the destination.
    amount        bigint      NOT NULL,
    balance_after bigint      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT entries_amount_nonzero CHECK (amount <> 0),
    CONSTRAINT entries_one_per_side UNIQUE (transfer_id, account_id)
);

CREATE INDEX entries_account_idx ON entries (account_id, seq DESC);
