-- Webhooks: endpoints that receive the change feed's events, signed per the Standard Webhooks
-- specification. `tally worker` delivers them in sequence order per endpoint, one at a time,
-- with retries and exponential backoff; an event that fails every attempt becomes a dead
-- letter (`tally admin webhook-dead-letters`, `requeue-webhook`) and the endpoint moves on.
CREATE TABLE webhooks (
    id                uuid        PRIMARY KEY,
    owner_id          uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url               text        NOT NULL,
    -- The types delivered; empty: every type.
    event_types       text[]      NOT NULL DEFAULT '{}',
    -- Only this account's events (as its watchers see them); NULL: every event (bankers and
    -- admins only).
    account_id        uuid        REFERENCES accounts (id),
    -- The signing secret (`whsec_…`). Stored as is: the worker signs with it. Returned once,
    -- by CreateWebhook; no read shows it again.
    secret            text        NOT NULL,
    -- Events up to this sequence are delivered or dead-lettered; the next one is in flight.
    delivered_through bigint      NOT NULL CHECK (delivered_through >= 0),
    -- Failed attempts at the next event, and when to try it again.
    attempts          integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhooks_url_length CHECK (length(url) BETWEEN 1 AND 2048),
    CONSTRAINT webhooks_url_scheme CHECK (url ~ '^https?://'),
    CONSTRAINT webhooks_event_types_known CHECK (event_types <@ ARRAY[
        'transfer.created', 'transfer.posted', 'transfer.voided', 'transfer.expired',
        'account.opened', 'account.closed']::text[])
);
CREATE INDEX webhooks_owner_idx ON webhooks (owner_id);
CREATE INDEX webhooks_due_idx ON webhooks (next_attempt_at);

CREATE TABLE webhook_dead_letters (
    id           uuid        PRIMARY KEY,
    webhook_id   uuid        NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    sequence     bigint      NOT NULL,
    attempts     integer     NOT NULL CHECK (attempts > 0),
    last_error   text        NOT NULL,
    dead_at      timestamptz NOT NULL DEFAULT now(),
    -- Set by `tally admin requeue-webhook`: the worker delivers it again (once, out of order).
    requeued_at  timestamptz,
    delivered_at timestamptz,
    CONSTRAINT webhook_dead_letters_once UNIQUE (webhook_id, sequence),
    CONSTRAINT webhook_dead_letters_delivered_after_requeue
        CHECK (delivered_at IS NULL OR requeued_at IS NOT NULL)
);
CREATE INDEX webhook_dead_letters_requeued_idx ON webhook_dead_letters (requeued_at)
    WHERE requeued_at IS NOT NULL AND delivered_at IS NULL;
