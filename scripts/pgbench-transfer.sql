-- One transfer with the shape of tally's engine (src/ledger/engine.rs): SERIALIZABLE, lock both
-- accounts in ascending id order with FOR NO KEY UPDATE, two balance updates, one transfer
-- insert, two entry inserts. pgbench --max-tries retries serialization failures and deadlocks.
-- Variables: naccounts (accounts in bench_accounts), requester (a user id).
\set a random(1, :naccounts)
\set d random(1, :naccounts - 1)
\set b 1 + (:a - 1 + :d) % :naccounts
\set amount random(1, 100)
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT (SELECT id FROM bench_accounts WHERE i = :a) AS src, (SELECT id FROM bench_accounts WHERE i = :b) AS dst, gen_random_uuid() AS tid \gset
SELECT id, balance FROM accounts WHERE id IN (':src'::uuid, ':dst'::uuid) ORDER BY id FOR NO KEY UPDATE;
UPDATE accounts SET balance = balance - :amount, updated_at = now() WHERE id = ':src'::uuid RETURNING balance AS src_after \gset
UPDATE accounts SET balance = balance + :amount, updated_at = now() WHERE id = ':dst'::uuid RETURNING balance AS dst_after \gset
INSERT INTO transfers (id, kind, requested_by, from_account_id, to_account_id, amount, currency, status, memo, fingerprint)
  VALUES (':tid'::uuid, 'transfer', ':requester'::uuid, ':src'::uuid, ':dst'::uuid, :amount, 'USD', 'succeeded', '', sha256(':tid'::text::bytea));
INSERT INTO entries (id, account_id, transfer_id, amount, balance_after) VALUES (gen_random_uuid(), ':src'::uuid, ':tid'::uuid, -:amount, :src_after);
INSERT INTO entries (id, account_id, transfer_id, amount, balance_after) VALUES (gen_random_uuid(), ':dst'::uuid, ':tid'::uuid, :amount, :dst_after);
COMMIT;
