// GraphQL over HTTP: graphql-http's own audit suite (auditServer) against the real
// stack (the balancer in front of two replicas, tests/browser/stack.mjs). Every MUST and
// every SHOULD must pass; the MAYs are printed.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { auditServer } from 'graphql-http';

import { startStack } from '../browser/stack.mjs';

let stack;

before(async () => {
  stack = await startStack();
});

after(async () => {
  await stack?.stop();
});

test('graphql-http audit: every MUST and every SHOULD', async () => {
  const results = await auditServer({ url: `${stack.base}/graphql` });
  const level = (r) => r.name.split(' ')[0];
  const failed = results.filter((r) => r.status !== 'ok' && level(r) !== 'MAY');
  for (const r of results.filter((r) => r.status !== 'ok')) {
    console.log(`${r.status.padEnd(6)} ${r.id} ${r.name}: ${r.reason}`);
  }
  const passed = (word) => `${results.filter((r) => level(r) === word && r.status === 'ok').length} of ${results.filter((r) => level(r) === word).length}`;
  console.log(`MUST ${passed('MUST')}, SHOULD ${passed('SHOULD')}, MAY ${passed('MAY')}`);
  assert.deepEqual(failed.map((r) => `${r.id} ${r.name}: ${r.reason}`), []);
});
