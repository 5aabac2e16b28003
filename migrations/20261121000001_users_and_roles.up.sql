-- Users, the built-in roles and who holds them.
-- The CHECK constraints mirror the validation in src/identity/validate.rs.

CREATE TABLE users (
    id                  uuid        PRIMARY KEY,
    username            text        NOT NULL,
    full_name           text        NOT NULL,
    email               text        NOT NULL,
    email_verified      boolean     NOT NULL DEFAULT false,
    -- PHC string of an argon2id hash; never the password.
    password_hash       text        NOT NULL,
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_username_format CHECK (username ~ '^[a-z0-9_]{3,32}$'),
    CONSTRAINT users_full_name_length CHECK (char_length(full_name) <= 128),
    CONSTRAINT users_email_length CHECK (char_length(email) BETWEEN 3 AND 254),
    CONSTRAINT users_password_hash_argon2id CHECK (password_hash LIKE '$argon2id$%')
);

-- Emails are unique regardless of case.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE roles (
    name        text   PRIMARY KEY,
    description text   NOT NULL,
    permissions text[] NOT NULL
);

INSERT INTO roles (name, description, permissions) VALUES
    ('customer', 'Every new user: opens accounts and moves money of their own.',
     ARRAY['accounts.own', 'transfers.own']),
    ('banker', 'Reads every account and transfer, deposits, withdraws, opens accounts and moves money for anyone.',
     ARRAY['accounts.read_any', 'accounts.create_any', 'accounts.deposit', 'accounts.withdraw',
           'transfers.read_any', 'transfers.create_any']),
    ('admin', 'Everything, including users, sessions and roles.',
     ARRAY['accounts.read_any', 'accounts.create_any', 'accounts.deposit', 'accounts.withdraw',
           'transfers.read_any', 'transfers.create_any', 'users.manage', 'sessions.manage',
           'roles.manage']);

CREATE TABLE user_roles (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text        NOT NULL REFERENCES roles (name),
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, role)
);

CREATE INDEX user_roles_role_idx ON user_roles (role);
