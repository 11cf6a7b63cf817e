#!/usr/bin/env node
// A sender that asks suppressd before every notice, and records opt-outs (docs/clients.md, Node).
//
//   node sender.js --server HOST:PORT --api-key KEY check --email ada@example.com --topic recall
//   node sender.js --server HOST:PORT --api-key KEY opt-out --email ada@example.com --idempotency-key K
//
// `check` is fail-closed: only an OK answer with suppressed=false sends (exit 0, {"decision":"send"});
// a suppressed answer, any error and a timeout hold the notice (exit 3, {"decision":"hold"}).
// `opt-out` retries transient failures (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED)
// with backoff, always with the same idempotency key, so a retry of an opt-out that did land returns
// the first receipt instead of recording a second one. Each prints one JSON line.
//
// The service's own proto/ is loaded at start with @grpc/proto-loader (no generated code to keep).
'use strict';

const path = require('node:path');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.join(__dirname, '..', '..', 'proto');
const TRANSIENT = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.RESOURCE_EXHAUSTED,
  grpc.status.ABORTED,
]);

function parseArgs(argv) {
  const opts = {
    server: process.env.SUPPRESSD_ADDR || '127.0.0.1:50051',
    apiKey: process.env.SUPPRESSD_API_KEY,
    tenant: '',
    timeoutMs: 2000,
    attempts: 5,
  };
  const names = {
    '--server': 'server', '--api-key': 'apiKey', '--tenant': 'tenant', '--email': 'email',
    '--topic': 'topic', '--idempotency-key': 'idempotencyKey', '--attempts': 'attempts',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === 'check' || a === 'opt-out') opts.command = a;
    else if (names[a] && i + 1 < argv.length) opts[names[a]] = argv[++i];
    else throw new Error(`unknown argument ${a}`);
  }
  if (!opts.command) throw new Error('give a command: check or opt-out');
  if (!opts.apiKey) throw new Error('--api-key or SUPPRESSD_API_KEY is required');
  if (!opts.email) throw new Error('--email is required');
  if (opts.command === 'check' && !opts.topic) throw new Error('--topic is required');
  opts.attempts = Number(opts.attempts);
  return opts;
}

function client(server) {
  const definition = protoLoader.loadSync('suppress/v1/suppression.proto', {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as in the .proto: receipt_id, idempotency_key
    enums: String,
    longs: String,
    defaults: true,
    oneofs: true,
  });
  const { Suppression } = grpc.loadPackageDefinition(definition).suppress.v1;
  // Plaintext for a local server; use grpc.credentials.createSsl() for TLS.
  return new Suppression(server, grpc.credentials.createInsecure());
}

function call(stub, method, request, metadata, timeoutMs) {
  return new Promise((resolve, reject) => {
    stub[method](request, metadata, { deadline: Date.now() + timeoutMs }, (err, answer) =>
      err ? reject(err) : resolve(answer));
  });
}

/** Fail-closed: only OK + suppressed=false sends. */
async function check(stub, metadata, opts) {
  const request = {
    recipient: { email: opts.email },
    scope: { tenant: opts.tenant, channel: 'CHANNEL_EMAIL', topic: opts.topic },
  };
  let answer;
  try {
    answer = await call(stub, 'CheckSuppressed', request, metadata, opts.timeoutMs);
  } catch (err) {
    return [3, { decision: 'hold', why: grpc.status[err.code] || String(err) }];
  }
  if (answer.suppressed !== false) {
    return [3, { decision: 'hold', why: answer.matched ? answer.matched.reason : 'suppressed' }];
  }
  // ... send the notice here ...
  return [0, { decision: 'send' }];
}

/** Records the opt-out; retries transient failures with the same idempotency key. */
async function optOut(stub, metadata, opts) {
  const request = {
    recipient: { email: opts.email },
    scope: { tenant: opts.tenant, channel: 'CHANNEL_EMAIL' },
    reason: 'REASON_USER_REQUEST',
    source: 'SOURCE_API',
    idempotency_key: opts.idempotencyKey || crypto.randomUUID(),
  };
  let backoffMs = 200;
  for (let attempt = 1; ; attempt++) {
    try {
      const answer = await call(stub, 'OptOut', request, metadata, opts.timeoutMs);
      return [0, { receipt_id: answer.receipt.receipt_id, state: answer.receipt.state, attempts: attempt }];
    } catch (err) {
      if (!TRANSIENT.has(err.code) || attempt >= opts.attempts) {
        return [1, { error: grpc.status[err.code] || String(err), detail: err.details, attempts: attempt }];
      }
      await new Promise((r) => setTimeout(r, backoffMs));
      backoffMs = Math.min(backoffMs * 2, 5000);
    }
  }
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`sender.js: ${err.message}`);
    process.exit(2);
  }
  const stub = client(opts.server);
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${opts.apiKey}`);
  const [code, result] = await (opts.command === 'check' ? check : optOut)(stub, metadata, opts);
  stub.close();
  console.log(JSON.stringify(result));
  process.exit(code);
}

main();
