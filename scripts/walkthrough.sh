#!/usr/bin/env bash
# scripts/walkthrough.sh — run the walkthroughs of docs/walkthrough.md (`buf curl` over gRPC, then plain `curl`
# over HTTP JSON) against a running tally server and check every answer.
#
# Usage:
#   TALLY_ADDR=127.0.0.1:8080 scripts/walkthrough.sh
#
#   TALLY_ADDR    host:port of a running `tally serve` (gRPC over h2c, reflection on);
#                 default 127.0.0.1:8080
#   DATABASE_URL  the server's database: the banker of the ledger steps is created with
#                 `tally admin`, which talks to the database directly
#   TALLY_BIN     the tally binary for `tally admin` (default <repo>/target/debug/tally)
#   WALKTHROUGH_MAIL_DIR  where a `tally worker` writes the server's mail as .eml files; when set,
#                 the mailed code verifies Alice's email (UserService/VerifyEmail)
#
# The commands below are the ones in docs/walkthrough.md; keep the
# two in step. Every run signs up a new user (alice_<epoch>_<random>), so the script can run
# again and again against the same database. buf comes from scripts/tools.sh (pinned, installed
# into .tools/ on first use). Exits non-zero with a message naming the step on any mismatch.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

TALLY_ADDR="${TALLY_ADDR:-127.0.0.1:8080}"
TALLY_BIN="${TALLY_BIN:-$SCRIPT_DIR/../target/debug/tally}"

log() { printf '\n==> %s\n' "$*"; }
fail() {
  printf '\nwalkthrough.sh: FAILED: %s\n' "$*" >&2
  exit 1
}
# expect_contains STEP OUTPUT NEEDLE... — every needle must occur in the output.
expect_contains() {
  local step="$1" output="$2" needle
  shift 2
  for needle in "$@"; do
    if [[ "$output" != *"$needle"* ]]; then
      fail "$step: expected the response to contain '$needle'"
    fi
  done
}
expect_absent() {
  local step="$1" output="$2" needle
  shift 2
  for needle in "$@"; do
    if [[ "$output" == *"$needle"* ]]; then
      fail "$step: the response must not contain '$needle'"
    fi
  done
}
# record STEP TEXT — keep what a step printed, for scripts/docs-outputs.py to compare with the
# example outputs of the docs (the <!-- output: STEP --> blocks). WALKTHROUGH_RECORD names the
# directory; unset, nothing is kept.
record() {
  [[ -n "${WALKTHROUGH_RECORD:-}" ]] || return 0
  printf '%s\n' "$2" >"$WALKTHROUGH_RECORD/$1.txt"
}
BUF_BIN_DIR="$("$SCRIPT_DIR/tools.sh" bin)" || fail "could not install buf (scripts/tools.sh bin)"
export PATH="$BUF_BIN_DIR:$PATH"
printf 'walkthrough.sh: buf %s, server %s\n' "$(buf --version)" "$TALLY_ADDR"

# ---- the walkthrough (same commands as docs/walkthrough.md) -------------------------------

TALLY="http://$TALLY_ADDR"
TALLY_USER="alice_$(date +%s)_$RANDOM"
TALLY_PASSWORD="correct horse battery staple"

log "Is the server up? (grpc.health.v1.Health/Check)"
if ! out="$(buf curl --protocol grpc "$TALLY/grpc.health.v1.Health/Check")"; then
  # buf reports both "nothing listens" and "no reflection" as "failed to find service"; tell
  # the two apart.
  host="${TALLY_ADDR%:*}"
  host="${host#[}"
  host="${host%]}"
  if ! (exec 3<>"/dev/tcp/$host/${TALLY_ADDR##*:}") 2>/dev/null; then
    fail "health check: nothing accepts connections on $TALLY_ADDR (start \`tally serve\` or set TALLY_ADDR)"
  fi
  fail "health check: $TALLY_ADDR accepts connections but the call failed; is it \`tally serve\` with server reflection on (TALLY_REFLECTION=true)?"
fi
printf '%s\n' "$out"
record health "$out"
expect_contains "health check" "$out" '"status": "SERVING"'

log "Services, via server reflection (buf curl --list-services)"
out="$(buf curl --protocol grpc --list-services "$TALLY")" ||
  fail "list services: reflection call failed (is TALLY_REFLECTION=false?)"
printf '%s\n' "$out"
record list-services "$out"
expected_services="grpc.health.v1.Health
grpc.reflection.v1.ServerReflection
tally.v1.AccountService
tally.v1.AuditService
tally.v1.EventService
tally.v1.ExchangeService
tally.v1.RoleService
tally.v1.SessionService
tally.v1.TransferService
tally.v1.UserService
tally.v1.WebhookService"
if [[ "$(printf '%s\n' "$out" | LC_ALL=C sort)" != "$expected_services" ]]; then
  fail "list services: expected exactly:
$expected_services"
fi

log "Methods, via server reflection (buf curl --list-methods)"
out="$(buf curl --protocol grpc --list-methods "$TALLY")" ||
  fail "list methods: reflection call failed"
printf '%s\n' "$out"
record list-methods "$out"
for method in \
  UserService/CreateUser UserService/GetUser UserService/UpdateUser UserService/VerifyEmail \
  UserService/ResendVerification \
  SessionService/Login SessionService/RefreshSession SessionService/ListSessions \
  SessionService/RevokeSession \
  RoleService/ListRoles RoleService/GrantRole RoleService/RevokeRole \
  AccountService/CreateAccount AccountService/GetAccount AccountService/ListAccounts \
  AccountService/ListEntries AccountService/Deposit AccountService/Withdraw \
  AccountService/UpdateAccount AccountService/CloseAccount AccountService/GetAccountBalance \
  TransferService/CreateTransfer TransferService/CreateTransfers TransferService/GetTransfer \
  TransferService/ListTransfers TransferService/PostTransfer TransferService/VoidTransfer \
  TransferService/ReverseTransfer \
  AuditService/ListAuditEvents ExchangeService/SetRate ExchangeService/ListRates \
  ExchangeService/WatchRates ExchangeService/CreateQuote EventService/WatchAccount \
  EventService/CreateBalanceMonitor WebhookService/CreateWebhook; do
  if ! printf '%s\n' "$out" | grep -qxF "tally.v1.$method"; then
    fail "list methods: tally.v1.$method is missing"
  fi
done

log "Sign up as $TALLY_USER (UserService/CreateUser)"
out="$(buf curl --protocol grpc "$TALLY/tally.v1.UserService/CreateUser" -d @- <<EOF
{"username": "$TALLY_USER", "fullName": "Alice Example", "email": "$TALLY_USER@example.com", "password": "$TALLY_PASSWORD"}
EOF
)" || fail "CreateUser failed"
printf '%s\n' "$out"
record create-user "$out"
expect_contains "CreateUser" "$out" "\"username\": \"$TALLY_USER\"" '"fullName": "Alice Example"' \
  "\"email\": \"$TALLY_USER@example.com\"" '"customer"' '"createdAt": '
expect_absent "CreateUser" "$out" "$TALLY_PASSWORD" '"password"'

log "Log in (SessionService/Login)"
LOGIN="$(buf curl --protocol grpc "$TALLY/tally.v1.SessionService/Login" -d @- <<EOF
{"username": "$TALLY_USER", "password": "$TALLY_PASSWORD"}
EOF
)" || fail "Login failed"
echo "$LOGIN"
record login "$LOGIN"
expect_contains "Login" "$LOGIN" '"sessionId": ' '"accessToken": ' '"accessTokenExpiresAt": ' \
  '"refreshToken": ' '"refreshTokenExpiresAt": ' "\"username\": \"$TALLY_USER\""
expect_absent "Login" "$LOGIN" "$TALLY_PASSWORD"
TOKEN="$(echo "$LOGIN" | python3 -c 'import json, sys; print(json.load(sys.stdin)["accessToken"])')" ||
  fail "Login: no accessToken in the response"
SESSION_ID="$(echo "$LOGIN" | python3 -c 'import json, sys; print(json.load(sys.stdin)["sessionId"])')" ||
  fail "Login: no sessionId in the response"
[[ -n "$TOKEN" && -n "$SESSION_ID" ]] || fail "Login: empty accessToken or sessionId"

log "Read yourself with the access token (UserService/GetUser)"
out="$(buf curl --protocol grpc --emit-defaults -H "Authorization: Bearer $TOKEN" \
  "$TALLY/tally.v1.UserService/GetUser" -d "{\"username\": \"$TALLY_USER\"}")" ||
  fail "GetUser with a valid token failed"
printf '%s\n' "$out"
record get-user "$out"
expect_contains "GetUser" "$out" "\"username\": \"$TALLY_USER\"" \
  "\"email\": \"$TALLY_USER@example.com\"" '"emailVerified": false' '"customer"'

log "List the roles (RoleService/ListRoles)"
out="$(buf curl --protocol grpc -H "Authorization: Bearer $TOKEN" \
  "$TALLY/tally.v1.RoleService/ListRoles")" || fail "ListRoles with a valid token failed"
printf '%s\n' "$out"
record list-roles "$out"
expect_contains "ListRoles" "$out" '"name": "customer"' '"name": "banker"' '"name": "admin"' \
  '"permissions": ['

# An RPC error: buf curl prints the status as JSON on stderr and exits with the gRPC code
# shifted left by three bits (UNAUTHENTICATED = 16 -> 128).
# expect_unauthenticated KEY STEP CMD... — the command must fail with UNAUTHENTICATED; its
# error is recorded as KEY and its exit status as KEY-status.
expect_unauthenticated() {
  local key="$1" step="$2" err rc=0
  shift 2
  err="$("$@" 2>&1 >/dev/null)" || rc=$?
  printf '%s\nexit status: %s\n' "$err" "$rc"
  record "$key" "$err"
  record "$key-status" "exit status: $rc"
  [[ "$rc" -eq 128 ]] || fail "$step: expected exit status 128 (UNAUTHENTICATED), got $rc"
  expect_contains "$step" "$err" '"code": "unauthenticated"'
}

# json_field FIELD — a top-level field of the JSON on stdin.
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
new_id() { python3 -c 'import uuid; print(uuid.uuid4())'; }

log "Open an account (AccountService/CreateAccount)"
out="$(buf curl --protocol grpc -H "Authorization: Bearer $TOKEN" \
  "$TALLY/tally.v1.AccountService/CreateAccount" -d '{"currency": "USD", "name": "Checking"}')" ||
  fail "CreateAccount failed"
printf '%s\n' "$out"
record create-account "$out"
expect_contains "CreateAccount" "$out" "\"owner\": \"$TALLY_USER\"" '"currency": "USD"' '"name": "Checking"'
CHECKING="$(echo "$out" | json_field accountId)" || fail "CreateAccount: no accountId"

log "A banker deposits \$100.00 (tally admin, then AccountService/Deposit)"
[[ -n "${DATABASE_URL:-}" ]] || fail "DATABASE_URL must name the server's database for tally admin"
TALLY_BANKER="banker_$(date +%s)_$RANDOM"
printf '%s\n' "$TALLY_PASSWORD" | "$TALLY_BIN" admin create-user --username "$TALLY_BANKER" \
  --email "$TALLY_BANKER@example.com" || fail "tally admin create-user failed"
"$TALLY_BIN" admin grant-role "$TALLY_BANKER" banker || fail "tally admin grant-role failed"
BANKER_TOKEN="$(buf curl --protocol grpc "$TALLY/tally.v1.SessionService/Login" \
  -d "{\"username\": \"$TALLY_BANKER\", \"password\": \"$TALLY_PASSWORD\"}" | json_field accessToken)" ||
  fail "banker login failed"
out="$(buf curl --protocol grpc -H "Authorization: Bearer $BANKER_TOKEN" \
  "$TALLY/tally.v1.AccountService/Deposit" \
  -d "{\"accountId\": \"$CHECKING\", \"requestId\": \"$(new_id)\", \"amount\": \"10000\", \"memo\": \"opening deposit\"}")" ||
  fail "Deposit failed"
printf '%s\n' "$out"
record deposit "$out"
expect_contains "Deposit" "$out" '"amount": "10000"' '"status": "TRANSFER_STATUS_SUCCEEDED"' \
  '"kind": "TRANSFER_KIND_DEPOSIT"'

log "Move \$25.00 to a second account (TransferService/CreateTransfer)"
SAVINGS="$(buf curl --protocol grpc -H "Authorization: Bearer $TOKEN" \
  "$TALLY/tally.v1.AccountService/CreateAccount" -d '{"currency": "USD", "name": "Savings"}' |
  json_field accountId)" || fail "CreateAccount (savings) failed"
TRANSFER_ID="$(new_id)"
out="$(buf curl --protocol grpc -H "Authorization: Bearer $TOKEN" \
  "$TALLY/tally.v1.TransferService/CreateTransfer" \
  -d "{\"transferId\": \"$TRANSFER_ID\", \"fromAccountId\": \"$CHECKING\", \"toAccountId\": \"$SAVINGS\", \"amount\": \"2500\", \"currency\": \"USD\", \"memo\": \"rainy day\"}")" ||
  fail "CreateTransfer failed"
printf '%s\n' "$out"
record transfer "$out"
expect_contains "CreateTransfer" "$out" "\"transferId\": \"$TRANSFER_ID\"" '"amount": "2500"' \
  '"status": "TRANSFER_STATUS_SUCCEEDED"'

log "The statement, newest first (AccountService/ListEntries)"
out="$(buf curl --protocol grpc -H "Authorization: Bearer $TOKEN" \
  "$TALLY/tally.v1.AccountService/ListEntries" -d "{\"accountId\": \"$CHECKING\"}")" ||
  fail "ListEntries failed"
printf '%s\n' "$out"
record entries "$out"
python3 - "$out" <<'PY' || fail "ListEntries: expected -2500 (balance 7500) then +10000 (balance 10000)"
import json, sys
entries = json.loads(sys.argv[1])["entries"]
assert [(e["amount"], e["balanceAfter"]) for e in entries] == [("-2500", "7500"), ("10000", "10000")], entries
PY

log "Without a token: UNAUTHENTICATED"
expect_unauthenticated no-token "ListRoles without a token" \
  buf curl --protocol grpc "$TALLY/tally.v1.RoleService/ListRoles"

log "Log out (SessionService/RevokeSession on your own session)"
out="$(buf curl --protocol grpc -H "Authorization: Bearer $TOKEN" \
  "$TALLY/tally.v1.SessionService/RevokeSession" -d "{\"sessionId\": \"$SESSION_ID\"}")" ||
  fail "RevokeSession failed"
printf '%s\n' "$out"
record logout "$out"

log "The old access token stops working (within 5 s)"
# The contract allows a revoked session's access tokens to live on for up to 5 s (per-replica
# cache); poll a little longer than that before calling it a failure.
deadline=$((SECONDS + 7))
while buf curl --protocol grpc -H "Authorization: Bearer $TOKEN" \
  "$TALLY/tally.v1.RoleService/ListRoles" >/dev/null 2>&1; do
  ((SECONDS < deadline)) || fail "RevokeSession: the access token still works 7 s after logout"
  sleep 0.5
done
expect_unauthenticated after-logout "ListRoles after logout" \
  buf curl --protocol grpc -H "Authorization: Bearer $TOKEN" "$TALLY/tally.v1.RoleService/ListRoles"

if [[ -n "${WALKTHROUGH_MAIL_DIR:-}" ]]; then
  log "Verify the email with the mailed code (UserService/VerifyEmail)"
  # The worker writes each mail as an .eml file (TALLY_MAIL_DIR) when it has no SMTP server.
  mail=""
  deadline=$((SECONDS + 30))
  while [[ -z "$mail" ]]; do
    mail="$(grep -l -r -F "$TALLY_USER@example.com" "$WALKTHROUGH_MAIL_DIR" 2>/dev/null | head -n 1 || true)"
    [[ -n "$mail" ]] && break
    ((SECONDS < deadline)) || fail "no verification mail for $TALLY_USER within 30 s"
    sleep 0.2
  done
  # verification_id and code, from the text part (decoded: it may be quoted-printable).
  read -r VERIFICATION_ID CODE < <(python3 - "$mail" <<'PY'
import email, sys
message = email.message_from_binary_file(open(sys.argv[1], "rb"))
text = next(p for p in message.walk() if p.get_content_type() == "text/plain")
lines = text.get_payload(decode=True).decode().splitlines()
field = lambda name: next(l[len(name):].strip() for l in lines if l.startswith(name))
print(field("verification_id: "), field("code: "))
PY
  ) || fail "VerifyEmail: no verification_id and code in $mail"
  out="$(buf curl --protocol grpc "$TALLY/tally.v1.UserService/VerifyEmail" \
    -d "{\"verificationId\": \"$VERIFICATION_ID\", \"code\": \"$CODE\"}")" || fail "VerifyEmail failed"
  printf '%s\n' "$out"
  record verify-email "$out"
  expect_contains "VerifyEmail" "$out" "\"username\": \"$TALLY_USER\"" '"emailVerified": true'
fi

# expect_http KEY STEP STATUS CURL_ARGS... — the call must answer STATUS with a JSON error body;
# the body and status line, as docs/walkthrough.md prints them, are recorded as KEY.
expect_http() {
  local key="$1" step="$2" want="$3" out status
  shift 3
  out="$(curl -sS -w 'HTTP %{http_code}\n' "$@")" || fail "$step: curl failed"
  printf '%s\n' "$out"
  record "$key" "$out"
  status="${out##*HTTP }"
  [[ "$status" == "$want" ]] || fail "$step: expected HTTP $want, got $status"
  expect_contains "$step" "$out" '"code":' '"message":' '"details":'
}

# ---- the same over HTTP JSON with plain curl (the curl walkthrough of docs/walkthrough.md) ------------------

CURL_USER="bob_$(date +%s)_$RANDOM"
# pretty JSON — what the README pipes through for readability
pretty() { python3 -m json.tool; }

log "curl: is it up?"
out="$(curl -sS --fail-with-body "$TALLY/healthz")" || fail "curl /healthz failed"
printf '%s\n' "$out"
record curl-healthz "$out"
expect_contains "curl /healthz" "$out" "ok"

log "curl: sign up as $CURL_USER (POST /v1/users)"
out="$(curl -sS --fail-with-body -H 'content-type: application/json' "$TALLY/v1/users" -d @- <<EOF
{"username": "$CURL_USER", "fullName": "Bob Example", "email": "$CURL_USER@example.com", "password": "$TALLY_PASSWORD"}
EOF
)" || fail "curl: POST /v1/users failed: $out"
printf '%s\n' "$out" | pretty
record curl-sign-up "$out"
expect_contains "curl sign up" "$out" "\"username\":\"$CURL_USER\"" '"roles":["customer"]'
expect_absent "curl sign up" "$out" "$TALLY_PASSWORD"

log "curl: log in (POST /v1/sessions)"
LOGIN="$(curl -sS --fail-with-body -H 'content-type: application/json' "$TALLY/v1/sessions" \
  -d "{\"username\": \"$CURL_USER\", \"password\": \"$TALLY_PASSWORD\"}")" ||
  fail "curl: POST /v1/sessions failed: $LOGIN"
printf '%s\n' "$LOGIN" | pretty
record curl-login "$LOGIN"
TOKEN="$(echo "$LOGIN" | json_field accessToken)" || fail "curl login: no accessToken"
SESSION_ID="$(echo "$LOGIN" | json_field sessionId)" || fail "curl login: no sessionId"

log "curl: read yourself (GET /v1/users/$CURL_USER)"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" "$TALLY/v1/users/$CURL_USER")" ||
  fail "curl: GET /v1/users/$CURL_USER failed: $out"
printf '%s\n' "$out" | pretty
record curl-get-user "$out"
expect_contains "curl GetUser" "$out" "\"email\":\"$CURL_USER@example.com\""

log "curl: change your full name (PATCH /v1/users/$CURL_USER)"
out="$(curl -sS --fail-with-body -X PATCH -H "authorization: Bearer $TOKEN" \
  -H 'content-type: application/json' "$TALLY/v1/users/$CURL_USER" -d '{"fullName": "Robert Example"}')" ||
  fail "curl: PATCH /v1/users/$CURL_USER failed: $out"
printf '%s\n' "$out" | pretty
record curl-update-user "$out"
expect_contains "curl UpdateUser" "$out" '"fullName":"Robert Example"'

log "curl: list the roles (GET /v1/roles)"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" "$TALLY/v1/roles")" ||
  fail "curl: GET /v1/roles failed: $out"
printf '%s\n' "$out" | pretty
record curl-roles "$out"
expect_contains "curl ListRoles" "$out" '"name":"customer"' '"name":"banker"' '"name":"admin"'

log "curl: open an account (POST /v1/accounts)"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  "$TALLY/v1/accounts" -d '{"currency": "EUR", "name": "Travel"}')" ||
  fail "curl: POST /v1/accounts failed: $out"
printf '%s\n' "$out" | pretty
record curl-create-account "$out"
TRAVEL="$(echo "$out" | json_field accountId)" || fail "curl CreateAccount: no accountId"

log "curl: list your accounts (GET /v1/accounts), then without a token"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" "$TALLY/v1/accounts")" ||
  fail "curl: GET /v1/accounts failed: $out"
printf '%s\n' "$out" | pretty
record curl-list-accounts "$out"
expect_contains "curl ListAccounts" "$out" "\"accountId\":\"$TRAVEL\""
expect_http curl-accounts-no-token "curl ListAccounts without a token" 401 "$TALLY/v1/accounts"

log "curl: the banker deposits 50.00 EUR (POST /v1/accounts/$TRAVEL:deposit)"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $BANKER_TOKEN" \
  -H 'content-type: application/json' "$TALLY/v1/accounts/$TRAVEL:deposit" \
  -d "{\"requestId\": \"$(new_id)\", \"amount\": \"5000\"}")" ||
  fail "curl: deposit failed: $out"
printf '%s\n' "$out" | pretty
record curl-deposit "$out"
expect_contains "curl Deposit" "$out" '"amount":"5000"' '"status":"TRANSFER_STATUS_SUCCEEDED"'

log "curl: move 12.00 EUR to a second account (POST /v1/transfers)"
SPARE="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  "$TALLY/v1/accounts" -d '{"currency": "EUR"}' | json_field accountId)" ||
  fail "curl: second account failed"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  "$TALLY/v1/transfers" -d "{\"transferId\": \"$(new_id)\", \"fromAccountId\": \"$TRAVEL\", \"toAccountId\": \"$SPARE\", \"amount\": \"1200\", \"currency\": \"EUR\"}")" ||
  fail "curl: POST /v1/transfers failed: $out"
printf '%s\n' "$out" | pretty
record curl-transfer "$out"
expect_contains "curl CreateTransfer" "$out" '"amount":"1200"' '"status":"TRANSFER_STATUS_SUCCEEDED"'

log "curl: the statement (GET /v1/accounts/$TRAVEL/entries)"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" \
  "$TALLY/v1/accounts/$TRAVEL/entries?pageSize=10")" || fail "curl: ListEntries failed: $out"
printf '%s\n' "$out" | pretty
record curl-entries "$out"
python3 - "$out" <<'PY' || fail "curl ListEntries: expected -1200 (balance 3800) then +5000 (balance 5000)"
import json, sys
entries = json.loads(sys.argv[1])["entries"]
assert [(e["amount"], e["balanceAfter"]) for e in entries] == [("-1200", "3800"), ("5000", "5000")], entries
PY

log "curl: a linked chain of two whose second lacks funds moves nothing (POST /v1/transfers:batchCreate)"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  "$TALLY/v1/transfers:batchCreate" -d "{\"transfers\": [
    {\"transferId\": \"$(new_id)\", \"fromAccountId\": \"$TRAVEL\", \"toAccountId\": \"$SPARE\", \"amount\": \"100\", \"currency\": \"EUR\", \"linked\": true},
    {\"transferId\": \"$(new_id)\", \"fromAccountId\": \"$TRAVEL\", \"toAccountId\": \"$SPARE\", \"amount\": \"999999\", \"currency\": \"EUR\"}]}")" ||
  fail "curl: POST /v1/transfers:batchCreate failed: $out"
printf '%s\n' "$out" | pretty
record curl-batch "$out"
expect_contains "curl CreateTransfers" "$out" '"failureReason":"FAILURE_REASON_LINKED_TRANSFER_FAILED"' \
  '"failureReason":"FAILURE_REASON_INSUFFICIENT_FUNDS"'

log "curl: hold 20.00 EUR for an hour (POST /v1/transfers with pending and timeout)"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  "$TALLY/v1/transfers" -d "{\"transferId\": \"$(new_id)\", \"fromAccountId\": \"$TRAVEL\", \"toAccountId\": \"$SPARE\", \"amount\": \"2000\", \"currency\": \"EUR\", \"pending\": true, \"timeout\": \"3600s\"}")" ||
  fail "curl: hold failed: $out"
printf '%s\n' "$out" | pretty
record curl-hold "$out"
expect_contains "curl hold" "$out" '"status":"TRANSFER_STATUS_PENDING"' '"timeout":"3600s"' '"expiresAt":'
HOLD="$(echo "$out" | json_field transferId)" || fail "curl hold: no transferId"
HELD_AT="$(echo "$out" | json_field createdAt)" || fail "curl hold: no createdAt"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" "$TALLY/v1/accounts/$TRAVEL")" ||
  fail "curl: GetAccount failed: $out"
printf '%s\n' "$out" | pretty
record curl-account "$out"
expect_contains "curl GetAccount after the hold" "$out" '"balance":"3800"' '"pendingDebits":"2000"' \
  '"availableBalance":"1800"'

log "curl: post 15.00 EUR of it; the other 5.00 are released (POST /v1/transfers/$HOLD:post)"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  "$TALLY/v1/transfers/$HOLD:post" -d '{"amount": "1500"}')" || fail "curl: post failed: $out"
printf '%s\n' "$out" | pretty
record curl-post "$out"
expect_contains "curl PostTransfer" "$out" '"status":"TRANSFER_STATUS_POSTED"' '"postedAmount":"1500"'

log "curl: the payee gives 5.00 EUR back (POST /v1/transfers/$HOLD:reverse)"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  "$TALLY/v1/transfers/$HOLD:reverse" -d "{\"reversalId\": \"$(new_id)\", \"amount\": \"500\", \"memo\": \"partial refund\"}")" ||
  fail "curl: reverse failed: $out"
printf '%s\n' "$out" | pretty
record curl-reverse "$out"
expect_contains "curl ReverseTransfer" "$out" '"kind":"TRANSFER_KIND_REVERSAL"' \
  "\"reversesTransferId\":\"$HOLD\"" '"amount":"500"' '"status":"TRANSFER_STATUS_SUCCEEDED"'

log "curl: the balance now, and when the hold was placed (GET /v1/accounts/$TRAVEL/balance)"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" "$TALLY/v1/accounts/$TRAVEL/balance")" ||
  fail "curl: GetAccountBalance failed: $out"
printf '%s\n' "$out"
record curl-balance "$out"
expect_contains "curl GetAccountBalance now" "$out" '"balance":"2800"'
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" \
  "$TALLY/v1/accounts/$TRAVEL/balance?asOf=$HELD_AT")" || fail "curl: GetAccountBalance asOf failed: $out"
printf '%s\n' "$out"
record curl-balance-as-of "$out"
expect_contains "curl GetAccountBalance asOf" "$out" '"balance":"3800"' "\"asOf\":\"$HELD_AT\""

log "curl: a banker sets the USD/EUR rate (POST /v1/rates)"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $BANKER_TOKEN" -H 'content-type: application/json' \
  "$TALLY/v1/rates" -d '{"baseCurrency": "USD", "quoteCurrency": "EUR", "rate": "0.92", "spreadBps": 50}')" ||
  fail "curl: SetRate failed: $out"
printf '%s\n' "$out"
record curl-set-rate "$out"
expect_contains "curl SetRate" "$out" '"rate":"0.92"' '"spreadBps":50'

log "curl: the banker funds the EUR liquidity account (GET /v1/liquidityAccounts, then a deposit)"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $BANKER_TOKEN" "$TALLY/v1/liquidityAccounts")" ||
  fail "curl: ListLiquidityAccounts failed: $out"
EUR_LIQUIDITY="$(printf '%s' "$out" | python3 -c '
import json, sys
print(next(a["accountId"] for a in json.load(sys.stdin)["accounts"] if a["currency"] == "EUR"))')" ||
  fail "curl: no EUR liquidity account"
curl -sS --fail-with-body -o /dev/null -H "authorization: Bearer $BANKER_TOKEN" -H 'content-type: application/json' \
  "$TALLY/v1/accounts/$EUR_LIQUIDITY:deposit" -d "{\"requestId\": \"$(new_id)\", \"amount\": \"100000\"}" ||
  fail "curl: funding the EUR liquidity account failed"

log "curl: a USD wallet with 20.00 USD, then a quote for 10.00 USD in EUR (POST /v1/quotes)"
WALLET="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  "$TALLY/v1/accounts" -d '{"currency": "USD", "name": "Wallet"}' | json_field accountId)" ||
  fail "curl: opening the USD wallet failed"
curl -sS --fail-with-body -o /dev/null -H "authorization: Bearer $BANKER_TOKEN" -H 'content-type: application/json' \
  "$TALLY/v1/accounts/$WALLET:deposit" -d "{\"requestId\": \"$(new_id)\", \"amount\": \"2000\"}" ||
  fail "curl: the USD deposit failed"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  "$TALLY/v1/quotes" -d '{"fromCurrency": "USD", "toCurrency": "EUR", "fromAmount": "1000"}')" ||
  fail "curl: CreateQuote failed: $out"
printf '%s\n' "$out" | pretty
record curl-quote "$out"
expect_contains "curl CreateQuote" "$out" '"fromAmount":"1000"' '"toAmount":"915"' '"rate":"0.9154"'
QUOTE="$(echo "$out" | json_field quoteId)" || fail "curl CreateQuote: no quoteId"

log "curl: convert at the quote (POST /v1/conversions)"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  "$TALLY/v1/conversions" -d "{\"conversionId\": \"$(new_id)\", \"quoteId\": \"$QUOTE\", \"fromAccountId\": \"$WALLET\", \"toAccountId\": \"$TRAVEL\"}")" ||
  fail "curl: Convert failed: $out"
printf '%s\n' "$out" | pretty
record curl-convert "$out"
expect_contains "curl Convert" "$out" '"kind":"TRANSFER_KIND_CONVERSION"' '"amount":"1000"' '"amount":"915"'

log "curl: both statements (GET /v1/accounts/{account_id}/entries)"
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" "$TALLY/v1/accounts/$WALLET/entries?pageSize=2")" ||
  fail "curl: the wallet's statement failed: $out"
printf '%s\n' "$out"
record curl-wallet-entries "$out"
python3 - "$out" <<'PY' || fail "curl: expected -1000 (balance 1000) then +2000 on the wallet"
import json, sys
entries = json.loads(sys.argv[1])["entries"]
assert [(e["amount"], e["balanceAfter"]) for e in entries] == [("-1000", "1000"), ("2000", "2000")], entries
PY
out="$(curl -sS --fail-with-body -H "authorization: Bearer $TOKEN" "$TALLY/v1/accounts/$TRAVEL/entries?pageSize=1")" ||
  fail "curl: the travel account's statement failed: $out"
printf '%s\n' "$out"
record curl-travel-entries "$out"
expect_contains "curl travel statement" "$out" '"amount":"915"' '"balanceAfter":"3715"'

log "curl -N: the rates stream as Server-Sent Events (GET /v1/rates:watch, cut after a second)"
# curl exits 28 when --max-time ends the stream: that is the point here.
out="$(curl -sS -N --max-time 1 -H 'accept: text/event-stream' -H "authorization: Bearer $TOKEN" \
  "$TALLY/v1/rates:watch" 2>/dev/null || true)"
printf '%s\n' "$out"
record curl-rates-stream "$out"
expect_contains "curl WatchRates" "$out" 'data: {"rates":[{"baseCurrency":"USD","quoteCurrency":"EUR","rate":"0.92"' \
  '"snapshot":true'

log "curl: without a token: 401"
expect_http curl-no-token "curl ListRoles without a token" 401 "$TALLY/v1/roles"

log "curl: someone else's profile: 404, like a missing one"
expect_http curl-other-user "curl GetUser of another user" 404 -H "authorization: Bearer $TOKEN" \
  "$TALLY/v1/users/$TALLY_USER"

log "curl: the API description (GET /openapi.json, GET /docs)"
out="$(curl -sS --fail-with-body "$TALLY/openapi.json" | json_field openapi)" ||
  fail "curl: GET /openapi.json failed"
printf 'openapi %s\n' "$out"
[[ "$out" == 3.1.* ]] || fail "/openapi.json is not OpenAPI 3.1"
curl -sS --fail-with-body -o /dev/null "$TALLY/docs" || fail "curl: GET /docs failed"

log "curl: log out (DELETE /v1/sessions/$SESSION_ID)"
out="$(curl -sS --fail-with-body -X DELETE -H "authorization: Bearer $TOKEN" \
  "$TALLY/v1/sessions/$SESSION_ID")" || fail "curl: DELETE /v1/sessions failed: $out"
printf '%s\n' "$out"
record curl-logout "$out"
[[ "$out" == "{}" ]] || fail "curl logout: expected {}"

log "curl: the old access token stops working (within 5 s)"
deadline=$((SECONDS + 7))
while curl -sf -o /dev/null -H "authorization: Bearer $TOKEN" "$TALLY/v1/roles"; do
  ((SECONDS < deadline)) || fail "curl logout: the access token still works 7 s after logout"
  sleep 0.5
done
expect_http curl-after-logout "curl ListRoles after logout" 401 -H "authorization: Bearer $TOKEN" "$TALLY/v1/roles"

printf '\nwalkthrough.sh: OK (users %s and %s on %s)\n' "$TALLY_USER" "$CURL_USER" "$TALLY_ADDR"
