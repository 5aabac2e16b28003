-- Email verifications, the mail outbox that feeds the Redis job queue, and dead letters.
--
-- The plain verification code is never stored: the worker mints it at the moment it sends the
-- mail and keeps only its SHA-256 here (`code_hash` is NULL until then).

CREATE TABLE email_verifications (
    id            uuid        PRIMARY KEY,
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The address being verified; a later email change supersedes this row.
    email         text        NOT NULL,
    -- Why it exists: signup, email_changed or resend (resends are rate limited).
    purpose       text        NOT NULL,
    code_hash     bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    mailed_at     timestamptz,
    used_at       timestamptz,
    superseded_at timestamptz,
    CONSTRAINT email_verifications_purpose CHECK (purpose IN ('signup', 'email_changed', 'resend')),
    CONSTRAINT email_verifications_code_hash_length CHECK (octet_length(code_hash) = 32),
    -- A code exists exactly when the mail went out, and only a mailed code can be used.
    CONSTRAINT email_verifications_mailed_has_code CHECK ((mailed_at IS NULL) = (code_hash IS NULL)),
    CONSTRAINT email_verifications_used_was_mailed CHECK (used_at IS NULL OR mailed_at IS NOT NULL),
    CONSTRAINT email_verifications_expiry_after_creation CHECK (expires_at > created_at)
);

CREATE INDEX email_verifications_user_id_created_at_idx
    ON email_verifications (user_id, created_at DESC);

-- Mail owed. A row commits with its verification; the relay pushes it to Redis and leases it
-- until `next_attempt_at`; the worker deletes it once the mail is sent (or is no longer
-- wanted) and moves it to `mail_dead_letters` after the last failed attempt.
CREATE TABLE mail_outbox (
    id              uuid        PRIMARY KEY,
    verification_id uuid        NOT NULL UNIQUE
                                REFERENCES email_verifications (id) ON DELETE CASCADE,
    -- The versioned job payload (src/jobs/mod.rs, `MailJob`).
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Due for a (re)push to the queue at this time.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    relayed_at      timestamptz,
    relay_count     integer     NOT NULL DEFAULT 0,
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    CONSTRAINT mail_outbox_attempts_nonnegative CHECK (attempts >= 0),
    CONSTRAINT mail_outbox_last_error_length CHECK (char_length(last_error) <= 2000)
);

CREATE INDEX mail_outbox_next_attempt_at_idx ON mail_outbox (next_attempt_at);

-- Mail that failed every attempt. `tally admin mail dead-letters` lists these and
-- `tally admin mail requeue <id>` puts one back into the outbox (setting `requeued_at`).
CREATE TABLE mail_dead_letters (
    id              uuid        PRIMARY KEY,
    verification_id uuid        NOT NULL REFERENCES email_verifications (id) ON DELETE CASCADE,
    payload         jsonb       NOT NULL,
    attempts        integer     NOT NULL,
    last_error      text        NOT NULL,
    dead_at         timestamptz NOT NULL DEFAULT now(),
    requeued_at     timestamptz,
    CONSTRAINT mail_dead_letters_last_error_length CHECK (char_length(last_error) <= 2000)
);

CREATE INDEX mail_dead_letters_dead_at_idx ON mail_dead_letters (dead_at DESC);
