#!/usr/bin/env bash
# scripts/gateway-check.sh — checks the HTTP JSON gateway of a running tally server from the
# outside, with third-party clients:
#   1. /openapi.json parses and says OpenAPI 3.1; /docs is served as HTML;
#   2. schemathesis (PyPI) fuzzes every operation of /openapi.json with a logged-in token and
#      must find no 5xx and no
#      response that breaks the schema, status codes or content types it declares (all but
#      the `:watch` streams, which never end by design: tests/api/exchange.rs covers those);
#   3. a real gRPC-web client (@connectrpc/connect-web under node) logs in and makes
#      authenticated calls (scripts/grpc-web-client.cjs).
#
# Usage:
#   TALLY_ADDR=127.0.0.1:8080 scripts/gateway-check.sh
#
#   TALLY_ADDR                  host:port of a running `tally serve`; default 127.0.0.1:8080
#   SCHEMATHESIS_MAX_EXAMPLES   examples per operation (default 25)
#
# Signs up a new user per run, so it can run again and again. Tools come from
# scripts/tools.sh (pinned, installed into .tools/ on first use).

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
TALLY_ADDR="${TALLY_ADDR:-127.0.0.1:8080}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
TALLY="http://$TALLY_ADDR"

log() { printf '\n==> %s\n' "$*"; }
fail() {
  printf '\ngateway-check.sh: FAILED: %s\n' "$*" >&2
  exit 1
}

SCHEMATHESIS="$("$SCRIPT_DIR/tools.sh" schemathesis)" || fail "could not install schemathesis"
NODE_MODULES="$("$SCRIPT_DIR/tools.sh" node-modules)" || fail "could not install the npm packages"
BUF="$("$SCRIPT_DIR/tools.sh" buf)" || fail "could not install buf"
WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tally-gateway-check.XXXXXX")"
trap 'rm -rf "$WORK_DIR"' EXIT

log "/openapi.json is OpenAPI 3.1; /docs is HTML"
curl -fsS "$TALLY/openapi.json" -o "$WORK_DIR/openapi.json" || fail "GET /openapi.json failed"
python3 - "$WORK_DIR/openapi.json" <<'PY' || fail "/openapi.json is not an OpenAPI 3.1 document"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["openapi"].startswith("3.1."), doc["openapi"]
operations = [(m, p) for p, ops in doc["paths"].items() for m in ops]
assert len(operations) >= 22, f"only {len(operations)} operations"
for method, path in operations:
    op = doc["paths"][path][method]
    assert "200" in op["responses"] and "default" in op["responses"], (method, path)
print(f"openapi {doc['openapi']}: {len(operations)} operations, "
      f"{len(doc['components']['schemas'])} schemas")
PY
docs_type="$(curl -fsS -o /dev/null -w '%{content_type}' "$TALLY/docs")" || fail "GET /docs failed"
[[ "$docs_type" == text/html* ]] || fail "/docs answered $docs_type"

USERNAME="gw_$(date +%s)_$RANDOM"
PASSWORD="correct horse battery staple"
curl -fsS -H 'content-type: application/json' "$TALLY/v1/users" \
  -d "{\"username\": \"$USERNAME\", \"email\": \"$USERNAME@example.com\", \"password\": \"$PASSWORD\"}" \
  >/dev/null || fail "sign-up over JSON failed"
TOKEN="$(curl -fsS -H 'content-type: application/json' "$TALLY/v1/sessions" \
  -d "{\"username\": \"$USERNAME\", \"password\": \"$PASSWORD\"}" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["accessToken"])')" ||
  fail "login over JSON failed"

log "schemathesis $("$SCHEMATHESIS" --version | awk '{print $NF}'): every operation, $MAX_EXAMPLES examples each, as $USERNAME"
(
  cd "$WORK_DIR"
  "$SCHEMATHESIS" run \
    "$TALLY/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
    --max-examples "$MAX_EXAMPLES" --seed 20261121 --no-color --request-timeout 10 \
    --suppress-health-check all --warnings off \
    --exclude-path-regex ':watch$'
) || fail "schemathesis found failures (see above)"

log "gRPC-web client (@connectrpc/connect-web under node $(node --version))"
"$BUF" build "$ROOT_DIR/proto" -o "$WORK_DIR/tally.binpb" || fail "buf build proto failed"
NODE_PATH="$NODE_MODULES" node "$SCRIPT_DIR/grpc-web-client.cjs" "$TALLY" \
  "$WORK_DIR/tally.binpb" "$USERNAME" "$PASSWORD" || fail "the gRPC-web client failed"

printf '\ngateway-check.sh: OK (%s)\n' "$TALLY_ADDR"
