-- Reverts 20261201000005_transfer_batches. The older schema cannot express chain members that
-- failed because another member did, so those FAILED records (which moved no money and have no
-- entries) are deleted first.

DROP TABLE ledger_writer;

DELETE FROM transfers WHERE failure_reason = 'linked_transfer_failed';
ALTER TABLE transfers DROP CONSTRAINT transfers_failure_has_reason;
ALTER TABLE transfers ADD CONSTRAINT transfers_failure_has_reason CHECK (
    (status = 'failed' AND failure_reason IN ('insufficient_funds', 'currency_mismatch'))
    OR (status = 'succeeded' AND failure_reason IS NULL));
