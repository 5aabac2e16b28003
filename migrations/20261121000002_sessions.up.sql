-- Login sessions, their rotating refresh tokens, and failed logins for the brute-force limit.

CREATE TABLE sessions (
    id             uuid        PRIMARY KEY,
    user_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_agent     text        NOT NULL,
    client_address text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Moves forward with every refresh: the expiry of the newest refresh token.
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    -- Why it was revoked: logout, refresh_token_reuse, password_changed, admin, session_limit.
    revoked_reason text,
    CONSTRAINT sessions_user_agent_length CHECK (char_length(user_agent) <= 512),
    CONSTRAINT sessions_client_address_length CHECK (char_length(client_address) <= 128),
    CONSTRAINT sessions_revoked_has_reason CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);

CREATE INDEX sessions_user_id_created_at_idx ON sessions (user_id, created_at DESC);

-- Every refresh token ever issued, by the SHA-256 of its secret. A token whose `used_at` is set
-- has been rotated away; presenting it again is reuse and revokes the session.
CREATE TABLE refresh_tokens (
    token_hash bytea       PRIMARY KEY,
    session_id uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    CONSTRAINT refresh_tokens_hash_length CHECK (octet_length(token_hash) = 32)
);

CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);

-- Failed logins by attempted username (which may not exist), pruned past the window.
CREATE TABLE login_failures (
    username  text        NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT login_failures_username_length CHECK (char_length(username) <= 64)
);

CREATE INDEX login_failures_username_failed_at_idx ON login_failures (username, failed_at);
-- For pruning everything past the window, whichever username it names.
CREATE INDEX login_failures_failed_at_idx ON login_failures (failed_at);
