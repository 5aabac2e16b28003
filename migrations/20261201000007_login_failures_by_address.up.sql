-- Failed logins are counted per (username, client address) and per client address, not per
-- username alone: a wrong password from one address no longer locks the username out for
-- everyone else. Rows from before this migration have no address ('').
ALTER TABLE login_failures ADD COLUMN client_address text NOT NULL DEFAULT '';
ALTER TABLE login_failures ADD CONSTRAINT login_failures_client_address_length
    CHECK (char_length(client_address) <= 64);
CREATE INDEX login_failures_client_address_failed_at_idx
    ON login_failures (client_address, failed_at);
