// node-postgres ending a client while it is still connecting: it writes Terminate into the
// socket before its startup packet (Connection.end() while `_connecting`). PostgreSQL reads an
// impossible startup packet length and closes without an answer; the client must see no error.
// Used by tests/startup_packets.rs; prints facts, the test compares them.
const { Client } = require('pg');

async function once(i) {
  const c = new Client();
  const facts = [];
  c.on('error', (e) => facts.push(`error event: ${e.message}`));
  // node-postgres leaves the connect() promise pending in this case (straight to PostgreSQL
  // too); only a settlement is reported.
  c.connect().then(
    () => facts.push('connect resolved'),
    (e) => facts.push(`connect rejected: ${e.message}`),
  );
  facts.push(
    await c.end().then(
      () => 'end resolved',
      (e) => `end rejected: ${e.message}`,
    ),
  );
  // Errors arrive asynchronously: give them a moment before reporting.
  await new Promise((r) => setTimeout(r, 200));
  for (const f of facts) console.log(`run ${i}: ${f}`);
}

(async () => {
  console.log(`driver: node ${process.version}`);
  for (let i = 0; i < 3; i++) await once(i);
  // A normal client still works afterwards.
  const c = new Client();
  await c.connect();
  const r = await c.query('SELECT 41 + 1 AS answer');
  console.log(`after: answer=${r.rows[0].answer}`);
  await c.end();
  console.log('DONE');
})().catch((e) => {
  console.log(`unexpected: ${e.message}`);
  process.exit(1);
});
