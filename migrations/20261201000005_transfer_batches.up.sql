-- Transfer engine v2: postings are applied in batches (group commit) and linked chains.
--
-- 1. A chain member that moved nothing because another member failed is recorded FAILED with
--    reason `linked_transfer_failed`, so resending the chain replays the same answers.
-- 2. `ledger_writer` holds no rows: every batch transaction takes it in EXCLUSIVE mode as its
--    first statement, before the SERIALIZABLE snapshot is taken (LOCK TABLE takes none). Batches
--    of several replicas then run one after another, each seeing the one before it, instead of
--    failing each other with serialization errors on shared accounts.

ALTER TABLE transfers DROP CONSTRAINT transfers_failure_has_reason;
ALTER TABLE transfers ADD CONSTRAINT transfers_failure_has_reason CHECK (
    (status = 'failed'
        AND failure_reason IN ('insufficient_funds', 'currency_mismatch', 'linked_transfer_failed'))
    OR (status = 'succeeded' AND failure_reason IS NULL));

CREATE TABLE ledger_writer ();
COMMENT ON TABLE ledger_writer IS
    'Never holds rows: transfer batches lock it (EXCLUSIVE) to run one at a time across replicas';
