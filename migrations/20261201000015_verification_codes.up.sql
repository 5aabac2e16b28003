-- Every verification code the worker minted for a mail, kept (as its SHA-256) before the mail
-- is sent, in a transaction of its own. Sending mail and committing cannot be one atomic step:
-- when the worker loses its database connection after the SMTP server took a mail, its
-- transaction rolls back and the job is retried with a new code. Before this table the first
-- mail's code then never worked; now every code that may have been mailed works (until the
-- verification is used, superseded or expired), so a duplicate mail is harmless.
CREATE TABLE verification_codes (
    verification_id uuid        NOT NULL REFERENCES email_verifications (id) ON DELETE CASCADE,
    code_hash       bytea       NOT NULL CHECK (octet_length(code_hash) = 32),
    minted_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (verification_id, code_hash)
);
