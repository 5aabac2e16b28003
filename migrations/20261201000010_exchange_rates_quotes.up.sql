-- Exchange: the rates bankers set between currencies, and the quotes users take at them.
-- A rate is exact (numeric, never a float); the code checks the same bounds (src/exchange/).

CREATE TABLE exchange_rates (
    base_currency  text        NOT NULL REFERENCES currencies (code),
    quote_currency text        NOT NULL REFERENCES currencies (code),
    -- How many quote units one base unit buys (the mid rate, before the spread).
    rate           numeric     NOT NULL,
    -- Taken off every conversion at this rate, in basis points of the mid rate.
    spread_bps     integer     NOT NULL,
    -- From exchange_rates_version: each change gets a higher one, so every replica's watchers
    -- can ask for what changed since the last they saw.
    version        bigint      NOT NULL,
    set_by         uuid        NOT NULL REFERENCES users (id),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (base_currency, quote_currency),
    CONSTRAINT exchange_rates_two_currencies CHECK (base_currency <> quote_currency),
    CONSTRAINT exchange_rates_rate_positive CHECK (rate > 0),
    CONSTRAINT exchange_rates_spread_range CHECK (spread_bps BETWEEN 0 AND 5000)
);

CREATE SEQUENCE exchange_rates_version;
CREATE UNIQUE INDEX exchange_rates_version_idx ON exchange_rates (version);

CREATE TABLE quotes (
    id            uuid        PRIMARY KEY,
    -- Only its requester can see or use a quote.
    owner_id      uuid        NOT NULL REFERENCES users (id),
    from_currency text        NOT NULL REFERENCES currencies (code),
    to_currency   text        NOT NULL REFERENCES currencies (code),
    -- Minor units: what the user pays and what they receive, already rounded.
    from_amount   bigint      NOT NULL,
    to_amount     bigint      NOT NULL,
    -- The effective rate shown (major units, spread included), as the user saw it.
    rate          text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    CONSTRAINT quotes_two_currencies CHECK (from_currency <> to_currency),
    CONSTRAINT quotes_amounts_positive CHECK (from_amount > 0 AND to_amount > 0),
    CONSTRAINT quotes_expiry_after_creation CHECK (expires_at > created_at)
);

CREATE INDEX quotes_expires_at_idx ON quotes (expires_at);

-- Setting rates is a banker's job.
UPDATE roles SET permissions = array_append(permissions, 'rates.manage')
    WHERE name IN ('banker', 'admin');
UPDATE roles SET description = 'Reads every account and transfer, deposits, withdraws, opens, '
    'limits and closes accounts, moves money for anyone and sets exchange rates.'
    WHERE name = 'banker';
