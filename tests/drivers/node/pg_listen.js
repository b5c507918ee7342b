// node-postgres LISTEN/NOTIFY scenario for tests/it/txn_listen.rs.
//
// Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE), listens
// on two channels with client.on('notification'), prints READY and waits for "go" on stdin while
// the test sends notifications (through pgheal and straight to the server). Then it waits for
// EXPECTED notifications (running queries meanwhile, so transactions interleave with
// deliveries), unlistens, and reports. The Rust test judges the transcript:
//
//   driver: <name and version>        (informational)
//   listen: ok
//   READY
//   notification: <channel> <payload>
//   query: <value>
//   unlisten: ok
//   DONE
'use strict';

const readline = require('readline');
const { Client } = require('pg');

const EXPECTED = Number(process.env.EXPECTED || '3');

function waitForGo() {
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: process.stdin });
    let got = null;
    rl.once('line', (line) => {
      got = line;
      rl.close();
    });
    rl.once('close', () => {
      process.stdin.destroy();
      if (got === null) reject(new Error("stdin closed before 'go'"));
      else if (got.trim() === 'go') resolve();
      else reject(new Error(`expected 'go' on stdin, got ${JSON.stringify(got)}`));
    });
  });
}

async function main() {
  const client = new Client();
  await client.connect();
  const got = [];
  let arrived = null;
  client.on('notification', (n) => {
    got.push(n);
    console.log(`notification: ${n.channel} ${n.payload}`);
    if (got.length >= EXPECTED && arrived) arrived();
  });
  try {
    console.log(`driver: node-postgres ${require('pg/package.json').version} (node ${process.version})`);
    await client.query('LISTEN jobs');
    await client.query('LISTEN "Mixed Case"');
    console.log('listen: ok');
    console.log('READY');
    await waitForGo();
    const all = new Promise((resolve) => {
      arrived = resolve;
      if (got.length >= EXPECTED) resolve();
    });
    const timeout = new Promise((_, reject) =>
      setTimeout(() => reject(new Error(`only ${got.length} of ${EXPECTED} notifications arrived`)), 20000),
    );
    // A query of its own while notifications may still be on their way.
    const res = await client.query('SELECT 41 + 1 AS v');
    await Promise.race([all, timeout]);
    console.log(`query: ${res.rows[0].v}`);
    await client.query('UNLISTEN *');
    console.log('unlisten: ok');
  } finally {
    await client.end();
  }
  console.log('DONE');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
