-- scripts/history-seed.sql — a long history for `make bench`'s point-in-time balance run:
-- two accounts of the bench user and :entries transfers of 1 between them, alternating
-- direction, one every 5 ms over the past, after a deposit of 1; so each account gets about
-- :entries entries. Written straight into the tables (seconds, not minutes, for 10^6), but
-- exactly as the ledger writes them: double entry, running balances, the system account's
-- entry and balance, the change feed's events (taking its writer lock, as every writer of
-- events does), so `tally verify` still passes after it.
--
-- psql -qAtX -v user=NAME -v entries=N -f scripts/history-seed.sql  (prints the two account
-- ids, one per line)
\set ON_ERROR_STOP on
BEGIN;
LOCK TABLE ledger_writer IN EXCLUSIVE MODE;
CREATE TEMP TABLE history_accounts ON COMMIT DROP AS
    SELECT gen_random_uuid() AS a, gen_random_uuid() AS b,
           (SELECT id FROM users WHERE username = :'user') AS owner,
           (SELECT id FROM accounts WHERE is_system AND currency = 'USD') AS system;
INSERT INTO accounts (id, owner_id, name, currency, created_at)
    SELECT a, owner, 'history', 'USD', now() - interval '3 hours' FROM history_accounts
    UNION ALL
    SELECT b, owner, 'history partner', 'USD', now() - interval '3 hours' FROM history_accounts;
-- n = 0: the deposit into a; odd n: a → b; even n: b → a. After n, a holds n % 2 = 0 ? 1 : 0.
CREATE TEMP TABLE history ON COMMIT DROP AS
    SELECT n, gen_random_uuid() AS id,
           CASE WHEN n = 0 THEN h.system WHEN n % 2 = 1 THEN h.a ELSE h.b END AS src,
           CASE WHEN n % 2 = 1 THEN h.b ELSE h.a END AS dst,
           now() - interval '2 hours' + n * interval '5 milliseconds' AS at
    FROM history_accounts h, generate_series(0, :entries) AS n;
INSERT INTO transfers (id, kind, requested_by, from_account_id, to_account_id, amount, currency,
                       status, fingerprint, created_at)
    SELECT t.id, CASE WHEN n = 0 THEN 'deposit' ELSE 'transfer' END, h.owner, src, dst, 1, 'USD',
           'succeeded', sha256(t.id::text::bytea), at
    FROM history t, history_accounts h ORDER BY n;
INSERT INTO entries (id, account_id, transfer_id, amount, balance_after, created_at)
    SELECT gen_random_uuid(), account, id, amount, balance_after, at FROM (
        SELECT n, 0 AS side, src AS account, id, -1 AS amount,
               CASE WHEN n = 0 THEN (SELECT balance FROM accounts a, history_accounts h
                                     WHERE a.id = h.system) - 1 ELSE 0 END AS balance_after, at
        FROM history
        UNION ALL
        SELECT n, 1, dst, id, 1, 1, at FROM history) e
    ORDER BY n, side;
-- The feed: the two openings, then one transfer.created per transfer with both positions
-- after it (a and b alternate between 0 and 1; the system account pays the deposit).
INSERT INTO ledger_events (type, occurred_at, account_id, account_balance, account_pending_debits,
                           account_pending_credits)
    SELECT 'account.opened', now() - interval '3 hours', id, 0, 0, 0
    FROM (SELECT a AS id FROM history_accounts UNION ALL SELECT b FROM history_accounts) o;
INSERT INTO ledger_events (type, occurred_at, account_id, counterparty_id, transfer_id, status,
                           account_balance, account_pending_debits, account_pending_credits,
                           counterparty_balance, counterparty_pending_debits,
                           counterparty_pending_credits)
    SELECT 'transfer.created', at, src, dst, id, 'succeeded',
           CASE WHEN n = 0 THEN (SELECT balance FROM accounts a, history_accounts h
                                 WHERE a.id = h.system) - 1 ELSE 0 END, 0, 0, 1, 0, 0
    FROM history ORDER BY n;
UPDATE accounts SET balance = balance - 1 FROM history_accounts h WHERE accounts.id = h.system;
UPDATE accounts SET balance = CASE WHEN :entries % 2 = 0 THEN 1 ELSE 0 END
    FROM history_accounts h WHERE accounts.id = h.a;
UPDATE accounts SET balance = CASE WHEN :entries % 2 = 1 THEN 1 ELSE 0 END
    FROM history_accounts h WHERE accounts.id = h.b;
SELECT a FROM history_accounts UNION ALL SELECT b FROM history_accounts;
COMMIT;
