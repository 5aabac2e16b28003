-- The audit trail: one row per answered call of tally's services, written in batches off the
-- request path (src/audit). Pruned by the worker past TALLY_AUDIT_RETENTION_DAYS.
CREATE TABLE audit_events (
    id             uuid        PRIMARY KEY,
    at             timestamptz NOT NULL,
    -- NULL for an anonymous call. No foreign key: the trail outlives what it names.
    user_id        uuid,
    username       text,
    method         text        NOT NULL,
    resource_ids   text[]      NOT NULL DEFAULT '{}',
    outcome        text        NOT NULL,
    latency_micros bigint      NOT NULL,
    client_address text        NOT NULL DEFAULT '',
    request_id     text        NOT NULL DEFAULT '',
    CONSTRAINT audit_events_method_length CHECK (char_length(method) <= 128),
    CONSTRAINT audit_events_outcome_length CHECK (char_length(outcome) <= 32),
    CONSTRAINT audit_events_resource_ids_count CHECK (cardinality(resource_ids) <= 16),
    CONSTRAINT audit_events_client_address_length CHECK (char_length(client_address) <= 64),
    CONSTRAINT audit_events_request_id_length CHECK (char_length(request_id) <= 128),
    CONSTRAINT audit_events_latency_nonnegative CHECK (latency_micros >= 0)
);

-- Newest first, overall and per user; `id` (UUIDv7, time-ordered) breaks ties for paging.
CREATE INDEX audit_events_at_idx ON audit_events (at DESC, id DESC);
CREATE INDEX audit_events_user_at_idx ON audit_events (username, at DESC, id DESC);

-- Admins read it.
UPDATE roles SET permissions = array_append(permissions, 'audit.read') WHERE name = 'admin';
