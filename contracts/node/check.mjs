// Parses contracts/schema/asyncapi.json with the official AsyncAPI parser and compiles
// every generated JSON Schema with Ajv (draft 2020-12). Prints the counts; exits 1 on any
// error (parser diagnostics of severity "error", or a JSON Schema that does not compile).
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const here = dirname(fileURLToPath(import.meta.url));
const schemaDir = join(here, "..", "schema");
const asyncapiPath = join(schemaDir, "asyncapi.json");

const names = { [DiagnosticSeverity.Error]: "error", [DiagnosticSeverity.Warning]: "warning" };
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(asyncapiPath, "utf8"), {
  source: asyncapiPath,
});
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
const warnings = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Warning);
const other = diagnostics.length - errors.length - warnings.length;
for (const d of diagnostics) {
  const kind = names[d.severity] ?? "note";
  console.log(`  ${kind} ${d.code} at ${d.path.join(".") || "/"}: ${d.message}`);
}
const channels = document ? document.channels().length : 0;
const messages = document ? document.allMessages().length : 0;
console.log(
  `asyncapi: ${errors.length} errors, ${warnings.length} warnings` +
    `, ${other} notes (${channels} channels, ${messages} messages)`,
);

function* jsonFiles(dir) {
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* jsonFiles(path);
    else if (name.endsWith(".json") && path !== asyncapiPath) yield path;
  }
}
let schemas = 0;
const invalid = [];
for (const path of jsonFiles(schemaDir)) {
  const ajv = new Ajv2020({ strict: false, validateSchema: true, allErrors: true });
  addFormats(ajv);
  try {
    ajv.compile(JSON.parse(readFileSync(path, "utf8")));
    schemas += 1;
  } catch (err) {
    invalid.push(`${relative(schemaDir, path)}: ${err.message}`);
  }
}
for (const line of invalid) console.log(`  invalid JSON Schema ${line}`);
console.log(`json schema: ${schemas} valid, ${invalid.length} invalid`);

process.exit(errors.length || invalid.length || !document ? 1 : 0);
