#!/usr/bin/env node
// Real Dubbo and SOFA Bolt peers for the integration tests (tests/rpc.rs),
// built on Node's sofa-rpc-node (Bolt) and dubbo-remoting (Dubbo).
// Install the pinned packages with `npm ci --prefix tests/peers/rpc`.
//
//   node peer.js server PORT [bolt|dubbo] [close-after-response|failing]
//       Serve com.example.Calc { plus(a, b), echo(s), slow(ms),
//       attachment(name) } and
//       com.example.Other { whoami() -> PORT } until killed. Prints "ready"
//       once listening, and "slow MS" when a slow() call starts. With
//       close-after-response the server closes a connection as soon as it
//       has answered every request it read on it (as some Bolt servers do
//       after every response); it prints "closed N" with the number of
//       connections it closed so far, and "late request" for each request it
//       read on a connection it had closed (one it can no longer answer).
//       With failing, whoami() throws: Bolt answers SERVER_EXCEPTION.
//       attachment(name) answers the request's attachment (Dubbo; Bolt: the
//       request props in the body) of that name, or "-" without one.
//
//   node peer.js client HOST:PORT bolt|dubbo [--timeout MS] STEP [--then STEP]...
//       STEP is `CALLS METHOD ARGS...`: CALLS concurrent calls of METHOD
//       (`plus`, or `com.example.Other.whoami`: a bare method name is of
//       com.example.Calc). In ARGS, `$i` is the call's index (0-based); an
//       argument that reads as a number is sent as a number, else as a
//       string. Steps run one after the other, all on one RpcClient (one
//       connection per address). Prints one JSON line:
//         {"steps": [{"ok": N, "errors": N, "messages": {MESSAGE: N},
//                     "values": [String(RESULT) or null, ...]}, ...],
//          "connections": N, "closed": N}
//       where MESSAGE is "ErrorName: message", `values` is in call order, and
//       connections/closed count the TCP connections the client opened and
//       saw closed. --timeout is the per-call response timeout (default 10000).
//
//   node peer.js heartbeat HOST:PORT bolt|dubbo [ID]
//       Send one heartbeat with the library's own encoder on a fresh
//       connection and wait for the answer; prints {"ack": ID} (or exits 1
//       after 10 s).
'use strict';

const net = require('net');
const { RpcServer } = require('sofa-rpc-node').server;
const { RpcClient } = require('sofa-rpc-node').client;

const logger = { info() {}, warn() {}, error() {}, debug() {} };
const CALC = 'com.example.Calc';
const OTHER = 'com.example.Other';

function protocolOf(kind) {
  switch (kind) {
    case undefined:
    case 'bolt':
      return require('sofa-bolt-node');
    case 'dubbo':
      return require('dubbo-remoting');
    default:
      throw new Error(`unknown protocol ${kind} (bolt or dubbo)`);
  }
}

function usage() {
  console.error('usage: peer.js server PORT [bolt|dubbo] [close-after-response|failing]\n' +
    '       peer.js client HOST:PORT bolt|dubbo [--timeout MS] CALLS METHOD ARGS... [--then CALLS METHOD ARGS...]\n' +
    '       peer.js heartbeat HOST:PORT bolt|dubbo [ID]');
  process.exit(2);
}

// A server connection that ends itself (FIN) right after writing a response
// when it has no other request to answer: a request that arrives later is
// read but can no longer be answered.
function closingConnectionClass() {
  const RpcConnection = require('sofa-rpc-node/lib/server/connection');
  let closed = 0;
  return class ClosingConnection extends RpcConnection {
    constructor(options) {
      super(options);
      this._open = 0;
      this.on('request', () => {
        this._open++;
        if (this._ended) console.log('late request');
      });
    }
    async send(req, res) {
      const packet = await super.send(req, res);
      // Close as soon as this response is out, unless another request was
      // read meanwhile (its response closes then).
      if (--this._open === 0 && !this._ended) {
        this._ended = true;
        this.socket.end();
        console.log(`closed ${++closed}`);
      }
      return packet;
    }
  };
}

async function server(port, kind, mode) {
  if (!Number(port)) usage();
  if (mode !== undefined && mode !== 'close-after-response' && mode !== 'failing') usage();
  const failing = mode === 'failing';
  const server = new RpcServer({
    logger,
    port: Number(port),
    protocol: protocolOf(kind),
    ...(mode === 'close-after-response' ? { connectionClass: closingConnectionClass() } : {}),
  });
  // Methods see their request as `this.req`.
  server.createContext = req => ({ req });
  server.addService({ interfaceName: CALC }, {
    async attachment(name) {
      const props = (this && this.req && this.req.data.requestProps) || {};
      return props[name] === undefined ? '-' : String(props[name]);
    },
    async plus(a, b) { return a + b; },
    async echo(s) { return s; },
    // Logged and answered with this server's port: a mirror's shadow
    // counts the copies it got, and the client sees who answered.
    async seen(s) {
      console.log(`seen ${s}`);
      return `${s}@${port}`;
    },
    async slow(ms) {
      console.log(`slow ${ms}`);
      await new Promise(resolve => setTimeout(resolve, ms));
      return ms;
    },
  });
  server.addService({ interfaceName: OTHER }, {
    async whoami() {
      if (failing) throw new Error(`failing on purpose (${port})`);
      return Number(port);
    },
  });
  await server.start();
  await server.publish();
  console.log('ready');
}

function parseSteps(words) {
  const steps = [];
  let current = [];
  for (const w of words) {
    if (w === '--then') {
      steps.push(current);
      current = [];
    } else {
      current.push(w);
    }
  }
  steps.push(current);
  return steps.map(step => {
    const [calls, method, ...args] = step;
    if (!(Number(calls) >= 0) || !method) usage();
    const dot = method.lastIndexOf('.');
    return {
      calls: Number(calls),
      service: dot < 0 ? CALC : method.slice(0, dot),
      method: dot < 0 ? method : method.slice(dot + 1),
      args,
    };
  });
}

function argsFor(template, i) {
  return template.map(a => {
    const s = a.split('$i').join(String(i));
    return s !== '' && !isNaN(Number(s)) ? Number(s) : s;
  });
}

async function client(addr, kind, rest) {
  if (!addr || !kind) usage();
  let timeout = 10000;
  if (rest[0] === '--timeout') {
    timeout = Number(rest[1]);
    rest = rest.slice(2);
  }
  const steps = parseSteps(rest);
  // The tests look at every answer the gateway gives: no circuit breaking.
  require('sofa-rpc-node/lib/client/dynamic_config').instance.circuitBreaker.forceClosed = true;

  const counts = { connections: 0, closed: 0 };
  const BaseManager = require('sofa-rpc-node/lib/client/connection_mgr');
  class CountingManager extends BaseManager {
    doSetConn(address, conn) {
      if (this.doGetConn(address) !== conn) {
        counts.connections++;
        conn.once('close', () => { counts.closed++; });
      }
      return super.doSetConn(address, conn);
    }
  }
  const rpc = new RpcClient({ logger, protocol: protocolOf(kind), connectionManagerClass: CountingManager });
  const consumers = new Map();
  const consumer = async service => {
    if (!consumers.has(service)) {
      const c = rpc.createConsumer({ interfaceName: service, serverHost: addr });
      await c.ready();
      consumers.set(service, c);
    }
    return consumers.get(service);
  };

  const results = [];
  for (const step of steps) {
    const c = await consumer(step.service);
    const calls = [];
    for (let i = 0; i < step.calls; i++) {
      calls.push(c.invoke(step.method, argsFor(step.args, i), { responseTimeout: timeout })
        .then(value => ({ value }), error => ({ error: `${error.name}: ${error.message}` })));
    }
    const outcomes = await Promise.all(calls);
    const r = { ok: 0, errors: 0, messages: {}, values: [] };
    for (const o of outcomes) {
      if ('error' in o) {
        r.errors++;
        r.messages[o.error] = (r.messages[o.error] || 0) + 1;
        r.values.push(null);
      } else {
        r.ok++;
        r.values.push(o.value === undefined || o.value === null ? null : String(o.value));
      }
    }
    results.push(r);
  }
  console.log(JSON.stringify({ steps: results, connections: counts.connections, closed: counts.closed }));
  process.exit(0);
}

async function heartbeat(addr, kind, id) {
  const protocol = protocolOf(kind);
  const [host, port] = addr.split(':');
  const socket = net.connect(Number(port), host);
  const sentReqs = new Map();
  const encoder = protocol.encoder({ sentReqs, classCache: new Map() });
  const decoder = protocol.decoder({ sentReqs, classCache: new Map() });
  encoder.pipe(socket).pipe(decoder);
  const want = Number(id) || 7;
  setTimeout(() => { console.error('no heartbeat answer within 10 s'); process.exit(1); }, 10000);
  decoder.on('heartbeat_ack', ack => {
    console.log(JSON.stringify({ ack: Number(ack.packetId) }));
    process.exit(0);
  });
  socket.on('close', () => { console.error('the connection closed'); process.exit(1); });
  socket.once('connect', () => {
    encoder.writeHeartbeat(want, { timeout: 3000, clientUrl: `${socket.localAddress}:${socket.localPort}` });
  });
}

const [mode, ...rest] = process.argv.slice(2);
const run = {
  server: () => server(rest[0], rest[1], rest[2]),
  client: () => client(rest[0], rest[1], rest.slice(2)),
  heartbeat: () => heartbeat(rest[0], rest[1], rest[2]),
}[mode];
if (!run) usage();
run().catch(err => {
  console.error(err);
  process.exit(1);
});
