#!/usr/bin/env node
// Closed-loop benchmark of Node's rate-limiter-flexible, the peer a Node user would pick.
//
// Runs one limiter (RateLimiterMemory, or RateLimiterRedis over ioredis) on one workload for a
// number of seconds and prints one line of JSON with the throughput, the latency of the timed
// calls, and the process's peak resident memory. The rule is the one sluice's side uses: 100
// points per 1-second window per key, every call consuming 1 point.
//
// `--concurrency C` keeps C calls in flight (C async workers, each awaiting its own calls one
// after another), as a Node server handling many requests at once would; the default is 16
// with Redis and 1 in memory (where every call settles at once and more workers would only
// make each timed call wait behind the others' continuations).
//
//   npm ci --prefix bench/peers       # or bench/peers/install.sh
//   node bench/peers/rlf_bench.js --storage redis --redis-url redis://127.0.0.1:6390 \
//       --workload uniform --seconds 5
//
// See bench/peers/README.md for the workloads and the output schema.
'use strict';

const { RateLimiterMemory, RateLimiterRedis } = require('rate-limiter-flexible');

const LIMIT_PER_SECOND = 100; // the rule sluice's side uses: 100 per 1-second window per key
const WARMUP_SECONDS = 0.5; // run, then discarded, before the measured phase
const TABLE_SIZE = 1 << 20; // precomputed key indices, walked cyclically
const CDF_POINTS = 200; // quantiles of the latency sample kept in the output
const YIELD_EVERY = 256; // a worker yields to the event loop (timers, I/O) this often
const SEED = 42;

// Workload -> default number of distinct keys.
const WORKLOAD_KEYS = { hot: 1, uniform: 100000, zipf: 1000000 };

// Key i is a 32-byte string, as in sluice's own benchmark ("tenant-" + 25 digits). It is
// built on every call (a caller has to produce its key too), from an index read from the
// precomputed table.
const keyOf = (i) => 'tenant-' + String(i).padStart(25, '0');

function usage(message) {
  process.stderr.write(
    (message ? `rlf_bench: ${message}\n` : '') +
      'usage: rlf_bench.js [--storage memory|redis] [--redis-url URL] ' +
      '[--workload hot|uniform|zipf] [--seconds S] [--keys N] [--concurrency C] ' +
      '[--sample-every N] [--seed N]\n',
  );
  process.exit(2);
}

function parseArgs(argv) {
  const args = {
    storage: 'memory',
    redisUrl: 'redis://127.0.0.1:6379',
    workload: 'hot',
    seconds: 5,
    keys: undefined,
    concurrency: undefined,
    sampleEvery: undefined,
    seed: SEED,
  };
  const positive = (name, v, integer) => {
    const x = Number(v);
    if (!(x > 0) || (integer && !Number.isInteger(x))) usage(`${name} must be a positive ${integer ? 'integer' : 'number'}`);
    return x;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === '-h' || flag === '--help') usage();
    const value = argv[++i];
    if (value === undefined) usage(`${flag} needs a value`);
    switch (flag) {
      case '--storage':
        if (!['memory', 'redis'].includes(value)) usage('--storage is memory or redis');
        args.storage = value;
        break;
      case '--redis-url': args.redisUrl = value; break;
      case '--workload':
        if (!(value in WORKLOAD_KEYS)) usage('--workload is hot, uniform or zipf');
        args.workload = value;
        break;
      case '--seconds': args.seconds = positive(flag, value, false); break;
      case '--keys': args.keys = positive(flag, value, true); break;
      case '--concurrency': args.concurrency = positive(flag, value, true); break;
      case '--sample-every': args.sampleEvery = positive(flag, value, true); break;
      case '--seed': args.seed = Number(value); break;
      case '--algorithm':
        // rate-limiter-flexible has one algorithm (a fixed window); accepted for a common CLI.
        if (value !== 'fixed') usage('rate-limiter-flexible only has a fixed window');
        break;
      default: usage(`unknown option ${flag}`);
    }
  }
  if (args.keys === undefined) args.keys = WORKLOAD_KEYS[args.workload];
  if (args.workload === 'hot' && args.keys !== 1) usage('the hot workload has one key; use uniform or zipf for more');
  if (args.concurrency === undefined) args.concurrency = args.storage === 'redis' ? 16 : 1;
  if (args.sampleEvery === undefined) args.sampleEvery = args.storage === 'redis' ? 1 : 16;
  return args;
}

// mulberry32: a small seeded PRNG, uniform doubles in [0, 1).
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// The sequence of key indices the workers walk, built before any timing.
// hot: one entry (index 0). uniform: TABLE_SIZE indices drawn uniformly from [0, keys).
// zipf: TABLE_SIZE indices drawn with P(i) proportional to 1 / (i + 1) (exponent 1.0), by
// binary search of a uniform draw in the cumulative weights.
function keyTable(workload, keys, seed) {
  if (workload === 'hot') return new Uint32Array(1);
  const rand = mulberry32(seed);
  const table = new Uint32Array(TABLE_SIZE);
  if (workload === 'uniform') {
    for (let i = 0; i < TABLE_SIZE; i++) table[i] = Math.floor(rand() * keys);
    return table;
  }
  const cum = new Float64Array(keys);
  let total = 0;
  for (let k = 0; k < keys; k++) cum[k] = total += 1 / (k + 1);
  for (let i = 0; i < TABLE_SIZE; i++) {
    const u = rand() * total;
    let lo = 0;
    let hi = keys - 1; // find the first k with cum[k] > u
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cum[mid] > u) hi = mid;
      else lo = mid + 1;
    }
    table[i] = lo;
  }
  return table;
}

// A growable array of latency samples in ns.
class Samples {
  constructor() {
    this.data = new Float64Array(1 << 16);
    this.length = 0;
  }
  push(x) {
    if (this.length === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = x;
  }
  sorted() {
    return this.data.slice(0, this.length).sort();
  }
}

const yieldToEventLoop = () => new Promise((resolve) => setImmediate(resolve));

// Decides calls back to back for `seconds` with `concurrency` workers sharing one walk of the
// table. Every `sampleEvery`-th call is timed (the library call until its promise settles and
// the worker resumes, not the key's building) into `samples` (unless it is null). A timer ends
// the run; each worker also yields to the event loop every YIELD_EVERY calls, so that timers
// (that one, and those with which rate-limiter-flexible's memory store expires keys) and I/O
// run as they would in a server even when every call settles at once.
// Returns { decisions, allowed, elapsedNs }.
async function closedLoop(limiter, table, seconds, concurrency, sampleEvery, samples) {
  const mask = table.length - 1; // the table's length is a power of two
  let stop = false;
  const timer = setTimeout(() => (stop = true), seconds * 1000);
  const start = process.hrtime.bigint();
  let pos = 0;
  let allowed = 0;
  let decisions = 0;

  async function worker() {
    while (!stop) {
      for (let i = 0; i < YIELD_EVERY && !stop; i++) {
        const n = pos++;
        const key = keyOf(table[n & mask]);
        const timed = samples !== null && n % sampleEvery === 0;
        const t0 = timed ? process.hrtime.bigint() : 0n;
        try {
          await limiter.consume(key, 1);
          allowed++;
        } catch (rejection) {
          // A denial rejects with a RateLimiterRes; anything else is a real error.
          if (rejection instanceof Error) throw rejection;
        }
        if (timed) samples.push(Number(process.hrtime.bigint() - t0));
        decisions++;
      }
      await yieldToEventLoop();
    }
  }

  await Promise.all(Array.from({ length: concurrency }, worker));
  clearTimeout(timer);
  return { decisions, allowed, elapsedNs: Number(process.hrtime.bigint() - start) };
}

// Nearest-rank quantile num/den (in (0, 1]) of a sorted, non-empty array.
function quantile(sorted, num, den) {
  const rank = Math.ceil((num * sorted.length) / den);
  return sorted[Math.max(rank, 1) - 1];
}

const round = (x, digits) => Number(x.toFixed(digits));

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const options = { points: LIMIT_PER_SECOND, duration: 1, keyPrefix: 'rlf-bench' };

  let redis = null;
  let limiter;
  if (args.storage === 'memory') {
    limiter = new RateLimiterMemory(options);
  } else {
    const Redis = require('ioredis');
    // Fail fast rather than queue commands while Redis is unreachable.
    redis = new Redis(args.redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: true });
    let lastError = null; // connection errors come as events; a failed call also rejects
    redis.on('error', (e) => (lastError = e));
    try {
      await redis.connect();
    } catch (e) {
      process.stderr.write(`rlf_bench: cannot reach Redis at ${args.redisUrl}: ${(lastError || e).message}\n`);
      process.exit(1);
    }
    limiter = new RateLimiterRedis({ ...options, storeClient: redis });
  }

  const table = keyTable(args.workload, args.keys, args.seed);
  const setupRssKib = process.resourceUsage().maxRSS;

  await closedLoop(limiter, table, WARMUP_SECONDS, args.concurrency, args.sampleEvery, null);
  const samples = new Samples();
  const run = await closedLoop(limiter, table, args.seconds, args.concurrency, args.sampleEvery, samples);
  const peakRssKib = process.resourceUsage().maxRSS;

  const lat = samples.sorted();
  const seconds = run.elapsedNs / 1e9;
  const versions = {
    node: process.versions.node,
    'rate-limiter-flexible': require('rate-limiter-flexible/package.json').version,
  };
  if (redis) versions.ioredis = require('ioredis/package.json').version;
  const result = {
    system: 'rate-limiter-flexible',
    variant: args.storage,
    workload: args.workload,
    keys: args.keys,
    seconds: round(seconds, 3),
    decisions: run.decisions,
    decisions_per_s: round(run.decisions / seconds, 1),
    allowed: run.allowed,
    denied: run.decisions - run.allowed,
    p50_us: round(quantile(lat, 1, 2) / 1e3, 2),
    p99_us: round(quantile(lat, 99, 100) / 1e3, 2),
    timed_calls: lat.length,
    sample_every: args.sampleEvery,
    concurrency: args.concurrency,
    setup_rss_kib: setupRssKib,
    peak_rss_kib: peakRssKib,
    versions,
    cdf_us: Array.from({ length: CDF_POINTS }, (_, i) => round(quantile(lat, i + 1, CDF_POINTS) / 1e3, 2)),
  };
  process.stdout.write(JSON.stringify(result) + '\n');

  if (redis) await redis.quit();
  // The memory store's expiry timers are unref'd; nothing else keeps the process alive.
}

main().catch((e) => {
  process.stderr.write(`rlf_bench: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
