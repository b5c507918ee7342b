// node-postgres driver scenario for tests/it/drivers_heal.rs.
//
// Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE) and runs
// named queries ({name, text, values}): node-postgres parses them once per connection and later
// sends Bind/Describe/Execute/Sync for the name. It does not retry on "cached plan must not change
// result type".
//
// Prints a transcript (see tests/it/drivers_heal.rs for the format), then "READY" and waits for a
// line "go" on stdin while the test migrates the table straight on the server, then runs the
// named queries again and reports rows or the error. The Rust test judges the transcript.
'use strict';

const readline = require('readline');
const { Client } = require('pg');

const SELECT = 'SELECT * FROM orders WHERE id = $1';
const INSERT = 'INSERT INTO orders (id, total, note) VALUES ($1, $2, $3) RETURNING *';
const TYPES = { 23: 'int4', 25: 'text', 1043: 'varchar', 1700: 'numeric' };

const fmt = (v) => (v === null || v === undefined ? 'NULL' : String(v));

async function run(client, label, query) {
  try {
    const res = await client.query(query);
    const cols = res.fields.map((f) => `${f.name}:${TYPES[f.dataTypeID] || f.dataTypeID}`);
    console.log(`${label}: columns=${cols.join(',')}`);
    console.log(`${label}: rows=${res.rows.length}`);
    for (const row of res.rows) {
      // Rows are objects keyed by the field names of this result.
      console.log(`${label}: row=${res.fields.map((f) => fmt(row[f.name])).join('|')}`);
    }
  } catch (e) {
    if (e.code === undefined) throw e;
    console.log(`${label}: error=${e.code} ${e.message} routine=${e.routine}`);
  }
}

function waitForGo() {
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: process.stdin });
    let got = null;
    rl.once('line', (line) => {
      got = line;
      rl.close();
    });
    rl.once('close', () => {
      // Let go of stdin, or its open pipe keeps node running after main() ends.
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
  try {
    console.log(`driver: node-postgres ${require('pg/package.json').version} (node ${process.version})`);
    const sel = (id) => ({ name: 'sel_orders', text: SELECT, values: [id] });
    const ins = (id, total, note) => ({ name: 'ins_orders', text: INSERT, values: [id, total, note] });
    await run(client, 'before select 1', sel(1));
    await run(client, 'before insert 3', ins(3, '30.25', 'third'));
    console.log('READY');
    await waitForGo();
    await run(client, 'after select 1', sel(1));
    await run(client, 'after select 2', sel(2));
    await run(client, 'after insert 4', ins(4, '40.75', 'fourth'));
  } finally {
    await client.end();
  }
  console.log('DONE');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
