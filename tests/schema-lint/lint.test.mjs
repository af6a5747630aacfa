// graphql-schema-linter's description rules on the exported SDL (`schema.graphql`,
// which api/tests/api/schema.rs keeps in sync with the code). The descriptions are
// written where the code is, as async-graphql doc comments and `desc` attributes.
//
// The alphabetical-order rules are left out on purpose: the order in the code is the
// order that reads best.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const linter = path.join(here, "node_modules", "graphql-schema-linter", "lib", "cli.js");
const schema = path.join(here, "..", "..", "schema.graphql");

export const RULES = [
  "types-have-descriptions",
  "fields-have-descriptions",
  "arguments-have-descriptions",
  "input-object-values-have-descriptions",
  "enum-values-have-descriptions",
  "deprecations-have-a-reason",
];

/** Runs the linter with the description rules; its exit status and what it printed. */
function lint(args, input) {
  try {
    const out = execFileSync(
      process.execPath,
      [linter, "--rules", RULES.join(","), "--format", "compact", ...args],
      { input, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] },
    );
    return { status: 0, out };
  } catch (e) {
    return { status: e.status, out: `${e.stdout}${e.stderr}` };
  }
}

test("every part of schema.graphql has a description", () => {
  const { status, out } = lint([schema]);
  assert.equal(status, 0, `graphql-schema-linter found what has no description:\n${out}`);
});

// The rules are the ones asked for and they do fail: one schema that breaks each.
test("the linter fails on each kind of missing description", () => {
  const undocumented = `
    type Query { item(id: ID): Item }
    "An item."
    type Item {
      "Its id."
      id: ID
      name: String
      "Old."
      old: String @deprecated
    }
    "A colour."
    enum Colour { "Red." RED BLUE }
    "A filter."
    input Filter { "By name." name: String colour: Colour }
  `;
  const { status, out } = lint(["--stdin"], undocumented);
  assert.notEqual(status, 0, out);
  for (const rule of RULES) {
    assert.match(out, new RegExp(`\\(${rule}\\)`), `${rule} did not fire:\n${out}`);
  }
});
