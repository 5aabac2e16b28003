-- One transfer with the shape of tally's single transfer (src/ledger/engine.rs): SERIALIZABLE,
-- lock both accounts in ascending id order with FOR NO KEY UPDATE, two balance updates, one
-- transfer insert, two entry inserts. pgbench --max-tries retries serialization failures and
-- deadlocks. Variables: naccounts (rows of bench_accounts), requester (a user id).
--
-- Written for `pgbench -M prepared`: each :var becomes a bind parameter, so it is cast as
-- :var::uuid (or ::bigint), never quoted (':var' would be the literal text ":var"), and an
-- untyped parameter under an operator (-:amount) would not resolve. The memo `pgbench` marks its
-- transfers: they write no change-feed event (the anchor is the hand-written transfer alone),
-- and `scripts/bench.sh` checks that they are the only ones without.
\set a random(1, :naccounts)
\set d random(1, :naccounts - 1)
\set b 1 + (:a - 1 + :d) % :naccounts
\set amount random(1, 100)
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT (SELECT id FROM bench_accounts WHERE i = :a::bigint) AS src, (SELECT id FROM bench_accounts WHERE i = :b::bigint) AS dst, gen_random_uuid() AS tid \gset
SELECT id, balance FROM accounts WHERE id IN (:src::uuid, :dst::uuid) ORDER BY id FOR NO KEY UPDATE;
UPDATE accounts SET balance = balance - :amount::bigint, updated_at = now() WHERE id = :src::uuid RETURNING balance AS src_after \gset
UPDATE accounts SET balance = balance + :amount::bigint, updated_at = now() WHERE id = :dst::uuid RETURNING balance AS dst_after \gset
INSERT INTO transfers (id, kind, requested_by, from_account_id, to_account_id, amount, currency, status, memo, fingerprint)
  VALUES (:tid::uuid, 'transfer', :requester::uuid, :src::uuid, :dst::uuid, :amount::bigint, 'USD', 'succeeded', 'pgbench', sha256(convert_to(:tid::text, 'UTF8')));
INSERT INTO entries (id, account_id, transfer_id, amount, balance_after) VALUES (gen_random_uuid(), :src::uuid, :tid::uuid, -(:amount::bigint), :src_after::bigint);
INSERT INTO entries (id, account_id, transfer_id, amount, balance_after) VALUES (gen_random_uuid(), :dst::uuid, :tid::uuid, :amount::bigint, :dst_after::bigint);
COMMIT;
