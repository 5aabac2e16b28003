#!/usr/bin/env bash
# scripts/vendor-swagger-ui.sh — the copy of Swagger UI that `tally serve` embeds for the API
# explorer at /docs (src/console/mod.rs), kept in vendor/swagger-ui/ so that building needs no
# npm. The version is pinned in tools/package.json (swagger-ui-dist) and its lockfile.
#
#   scripts/vendor-swagger-ui.sh update   copy the files from the pinned npm package (make tools)
#                                         into vendor/swagger-ui/, with its LICENSE and VERSION
#   scripts/vendor-swagger-ui.sh check    fail unless vendor/swagger-ui/ equals the pinned
#                                         package, byte for byte (make test-console runs it)
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
VENDOR_DIR="$ROOT_DIR/vendor/swagger-ui"
# What the explorer embeds, and the notices that must travel with it.
FILES=(swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt)

package="$("$SCRIPT_DIR/tools.sh" node-modules)/swagger-ui-dist"
[[ -f "$package/package.json" ]] || { echo "vendor-swagger-ui.sh: $package is missing" >&2; exit 1; }
version="$(node -p "require('$package/package.json').version")"

case "${1:-}" in
  update)
    mkdir -p "$VENDOR_DIR"
    for f in "${FILES[@]}"; do cp "$package/$f" "$VENDOR_DIR/$f"; done
    printf 'swagger-ui-dist %s\n' "$version" >"$VENDOR_DIR/VERSION"
    echo "vendor-swagger-ui.sh: vendor/swagger-ui/ is swagger-ui-dist $version" >&2
    ;;
  check)
    status=0
    for f in "${FILES[@]}"; do
      cmp -s "$package/$f" "$VENDOR_DIR/$f" || { echo "vendor-swagger-ui.sh: vendor/swagger-ui/$f differs from swagger-ui-dist $version" >&2; status=1; }
    done
    [[ "$(cat "$VENDOR_DIR/VERSION")" == "swagger-ui-dist $version" ]] ||
      { echo "vendor-swagger-ui.sh: vendor/swagger-ui/VERSION is not swagger-ui-dist $version" >&2; status=1; }
    [[ "$status" -eq 0 ]] || { echo "vendor-swagger-ui.sh: run make vendor-swagger-ui and commit" >&2; exit 1; }
    echo "vendor-swagger-ui.sh: vendor/swagger-ui/ equals swagger-ui-dist $version" >&2
    ;;
  *)
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
