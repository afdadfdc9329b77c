// An independent Stratum pool: stratum-pool-sha256 (NOMP's node-stratum-pool line),
// configured as its README shows, in front of node.py. Prints one JSON line per
// share it judges on stdout, and "ready" on stderr once it serves Stratum.
// usage: node pool.js STRATUM_PORT NODE_PORT
'use strict';
const Stratum = require('stratum-pool-sha256');

const [stratumPort, nodePort] = process.argv.slice(2).map(Number);
// Low share difficulties (1 = 2^32 hashes) and a fast variable difficulty, so a
// CPU miner sends several shares a second through several difficulty changes.
const varDiff = { minDiff: 0.001, maxDiff: 1, targetTime: 0.5, retargetTime: 10, variancePercent: 30 };
const pool = Stratum.createPool({
  coin: { name: 'Bitcoin', symbol: 'BTC', algorithm: 'sha256', asicboost: true, peerMagic: 'f9beb4d9' },
  address: 'bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4',
  ports: { [stratumPort]: { diff: 0.002, varDiff } },
  daemons: [{ host: '127.0.0.1', port: nodePort, user: 'quarry', password: 'quarry' }],
  p2p: { enabled: false },
  blockRefreshInterval: 500,
  jobRebroadcastTimeout: 5,
  connectionTimeout: 600,
  banning: { enabled: false },
  versionMask: 0x1fffe000,
}, (ip, port, worker, password, callback) => callback({ error: null, authorized: true, disconnect: false }));

pool.on('share', (valid, block, data) => {
  process.stdout.write(JSON.stringify({
    valid, block, worker: data.worker, height: data.height, job: data.job,
    difficulty: data.difficulty, error: data.error || null,
  }) + '\n');
});
pool.on('log', (severity, text) => {
  if (severity === 'special') console.error('ready');
  else if (severity === 'error') console.error(`error: ${text}`);
});
pool.start();
