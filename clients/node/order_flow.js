#!/usr/bin/env node
// orderflow from Node.js: one order through its whole life, with a safe retry policy.
//
// @grpc/proto-loader loads ../../proto at start-up (nothing generated, nothing committed);
// @grpc/grpc-js makes the calls. Every step prints one line; the last line is `OK` when every
// step behaved as documented in docs/api.md, and the exit status is non-zero otherwise.
// `node order_flow.js --help` lists the options; README.md beside this file shows how to run it.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const { status: Code } = grpc;
const codeName = (code) => Object.keys(Code).find((name) => Code[name] === code) || String(code);
// The only codes a retry may fix: the request may not have been applied, or not in time.
const RETRYABLE = new Set([Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED]);

// The call's status code, reading a CANCELLED that arrived once the deadline had passed as
// DEADLINE_EXCEEDED: when the server's copy of the deadline (the grpc-timeout header) fires
// before the client's own timer, the server (tonic) answers CANCELLED "Timeout expired".
function statusCode(error, startedMs, timeoutMs) {
  if (error.code === Code.CANCELLED && Date.now() - startedMs >= timeoutMs) return Code.DEADLINE_EXCEEDED;
  return error.code;
}

const OPTIONS = {
  'order-api': { type: 'string', default: process.env.ORDERFLOW_ORDER_API || '127.0.0.1:50051',
    help: 'order-api host:port (env ORDERFLOW_ORDER_API)' },
  inventory: { type: 'string', default: process.env.ORDERFLOW_INVENTORY || '127.0.0.1:50052',
    help: 'inventory-svc host:port (env ORDERFLOW_INVENTORY)' },
  token: { type: 'string', default: process.env.ORDERFLOW_TOKEN,
    help: 'buyer bearer token (scope orders) for the buyer\'s calls (env ORDERFLOW_TOKEN)' },
  'admin-token': { type: 'string', default: process.env.ORDERFLOW_ADMIN_TOKEN,
    help: 'operator bearer token (scope admin) for SetStock, ShipOrder, CompleteOrder '
      + '(env ORDERFLOW_ADMIN_TOKEN; default: --token)' },
  'tls-ca': { type: 'string', default: process.env.ORDERFLOW_TLS_CA,
    help: 'PEM CA file: connect with TLS and trust this CA (env ORDERFLOW_TLS_CA); default plaintext' },
  'tls-server-name': { type: 'string', default: process.env.ORDERFLOW_TLS_SERVER_NAME,
    help: 'name to verify the servers\' certificates against (default: the host)' },
  user: { type: 'string', default: 'alice', help: 'user_id of the buyer (with --token: its subject)' },
  sku: { type: 'string', default: `JS-${crypto.randomBytes(6).toString('hex')}`,
    help: 'SKU to put on sale (default: a fresh one per run)' },
  stock: { type: 'string', default: '5', help: 'units put on sale' },
  quantity: { type: 'string', default: '2', help: 'units ordered' },
  'price-cents': { type: 'string', default: '1999', help: 'unit price in minor units' },
  timeout: { type: 'string', default: '10', help: 'deadline of each unary call, seconds' },
  'first-deadline-ms': { type: 'string', default: '20',
    help: 'the tiny deadline of the first CreateOrder, to simulate a timeout' },
  'watch-timeout': { type: 'string', default: '60', help: 'deadline of the WatchOrder stream, seconds' },
  'max-attempts': { type: 'string', default: '6', help: 'attempts of a retryable call' },
  'proto-dir': { type: 'string', default: path.resolve(__dirname, '..', '..', 'proto'),
    help: 'root of the .proto files' },
  'order-id-file': { type: 'string', help: 'write the id of the order placed and completed here' },
  help: { type: 'boolean', default: false, help: 'show this help' },
};

function usage() {
  const lines = ['usage: node order_flow.js [options]', ''];
  for (const [name, option] of Object.entries(OPTIONS)) {
    const shown = option.default !== undefined && option.type === 'string' ? ` (default ${option.default})` : '';
    lines.push(`  --${name}${option.type === 'string' ? ' VALUE' : ''}\n      ${option.help}${shown}`);
  }
  return lines.join('\n');
}

function loadServices(protoDir) {
  const definition = protoLoader.loadSync(
    ['orderflow/order/v1/order.proto', 'orderflow/inventory/v1/inventory.proto'],
    // keepCase: the proto's field names; longs as numbers (every value here is far below 2^53);
    // enums as their names.
    { includeDirs: [protoDir], keepCase: true, longs: Number, enums: String, defaults: true },
  );
  const loaded = grpc.loadPackageDefinition(definition);
  return {
    OrderService: loaded.orderflow.order.v1.OrderService,
    InventoryService: loaded.orderflow.inventory.v1.InventoryService,
  };
}

class Flow {
  constructor(args) {
    this.args = args;
    this.failures = [];
    const { OrderService, InventoryService } = loadServices(args['proto-dir']);
    let credentials = grpc.credentials.createInsecure();
    const options = {};
    if (args['tls-ca']) {
      credentials = grpc.credentials.createSsl(fs.readFileSync(args['tls-ca']));
      if (args['tls-server-name']) options['grpc.ssl_target_name_override'] = args['tls-server-name'];
    }
    this.orders = new OrderService(args['order-api'], credentials, options);
    this.inventory = new InventoryService(args.inventory, credentials, options);
    this.buyerMd = metadata(args.token);
    this.adminMd = metadata(args['admin-token'] || args.token);
  }

  close() {
    if (this.watchStream) this.watchStream.cancel(); // no-op once the stream ended
    this.orders.close();
    this.inventory.close();
  }

  say(step, text) { console.log(`[${step}] ${text}`); }

  check(step, ok, text) {
    console.log(`[${step}] ${ok ? 'ok  ' : 'FAIL'} ${text}`);
    if (!ok) this.failures.push(`${step}: ${text}`);
    return ok;
  }

  // One unary call with a deadline of `timeoutMs`.
  once(client, method, request, md, timeoutMs) {
    return new Promise((resolve, reject) => {
      client[method](request, md, { deadline: Date.now() + timeoutMs }, (error, answer) => {
        if (error) reject(error); else resolve(answer);
      });
    });
  }

  // The retry policy. With `retry` (only for CreateOrder with the SAME request, hence the same
  // idempotency key, and for reads), UNAVAILABLE and DEADLINE_EXCEEDED are retried with
  // exponential backoff and full jitter; every other code (INVALID_ARGUMENT,
  // FAILED_PRECONDITION, ALREADY_EXISTS, NOT_FOUND, ...) is final.
  async call(step, client, method, request, { md, retry = false, timeoutMs } = {}) {
    const deadlineMs = timeoutMs ?? this.args.timeout * 1000;
    const attempts = retry ? this.args['max-attempts'] : 1;
    for (let attempt = 1; ; attempt += 1) {
      const startedMs = Date.now();
      try {
        return await this.once(client, method, request, md, deadlineMs);
      } catch (error) {
        const code = statusCode(error, startedMs, deadlineMs);
        if (!RETRYABLE.has(code) || attempt >= attempts) throw error;
        const pause = Math.random() * Math.min(2000, 100 * 2 ** attempt);
        this.say(step, `attempt ${attempt}: ${codeName(code)} (${error.details}); `
          + `retrying in ${(pause / 1000).toFixed(2)} s with the same request`);
        await new Promise((resolve) => { setTimeout(resolve, pause); });
      }
    }
  }

  // Calls once (these codes are never retried) and checks the status code.
  async expectError(step, code, client, method, request, md) {
    try {
      const answer = await this.call(step, client, method, request, { md });
      return this.check(step, false, `succeeded (expected ${codeName(code)}): ${JSON.stringify(answer)}`);
    } catch (error) {
      if (error.code === undefined) throw error;
      return this.check(step, error.code === code,
        `${codeName(error.code)} (expected ${codeName(code)}): ${error.details}`);
    }
  }

  // WatchOrder in the background: resolves with every status once the server ends the stream.
  watch(orderId) {
    const statuses = [];
    let firstSeen;
    const first = new Promise((resolve) => { firstSeen = resolve; });
    const done = new Promise((resolve) => {
      const stream = this.orders.WatchOrder({ order_id: orderId }, this.buyerMd,
        { deadline: Date.now() + this.args['watch-timeout'] * 1000 });
      this.watchStream = stream;
      stream.on('data', (message) => {
        statuses.push(message.order.status);
        this.say('WatchOrder', `${message.order.status} version ${message.order.version}`);
        firstSeen();
      });
      stream.on('error', (error) => {
        firstSeen();
        resolve({ statuses, error: `${codeName(error.code)}: ${error.details}` });
      });
      stream.on('end', () => { firstSeen(); resolve({ statuses, error: null }); });
    });
    return { first, done };
  }

  async run() {
    const a = this.args;

    // 1. An operator puts units of a fresh SKU on sale.
    const { stock } = await this.call('SetStock', this.inventory, 'SetStock',
      { sku: a.sku, quantity: a.stock, price_cents: a['price-cents'] }, { md: this.adminMd });
    this.check('SetStock', stock.available === a.stock,
      `${stock.sku}: available ${stock.available}, price ${stock.price_cents}`);

    // 2. CreateOrder, first with a tiny deadline (a simulated timeout), then the same key again.
    const key = `js-${crypto.randomUUID()}`;
    const create = { idempotency_key: key, user_id: a.user, items: [{ sku: a.sku, quantity: a.quantity }] };
    let firstId = null;
    const startedMs = Date.now();
    try {
      const first = await this.once(this.orders, 'CreateOrder', create, this.buyerMd, a['first-deadline-ms']);
      firstId = first.order.order_id;
      this.say('CreateOrder', `first try (${a['first-deadline-ms']} ms deadline) answered order ${firstId} in time`);
    } catch (error) {
      const code = statusCode(error, startedMs, a['first-deadline-ms']);
      if (!this.check('CreateOrder', RETRYABLE.has(code),
        `first try (${a['first-deadline-ms']} ms deadline): ${codeName(code)}: ${error.details}`)) return;
    }
    // The retry: same request, same key; the policy waits out "still being recorded".
    const { order } = await this.call('CreateOrder', this.orders, 'CreateOrder', create,
      { md: this.buyerMd, retry: true });
    const orderId = order.order_id;
    console.log(`order ${orderId}`);
    this.check('CreateOrder', order.status === 'ORDER_STATUS_PENDING'
      && order.total_cents === a.quantity * a['price-cents'],
    `retry with key ${key}: order ${orderId} ${order.status}, total ${order.total_cents} ${order.currency}`);
    const again = (await this.call('CreateOrder', this.orders, 'CreateOrder', create,
      { md: this.buyerMd, retry: true })).order;
    const same = again.order_id === orderId && (firstId === null || firstId === orderId);
    this.check('CreateOrder', same,
      `same key again: order ${again.order_id} (${same ? 'the same' : 'DIFFERENT'} order id)`);
    if (a['order-id-file']) fs.writeFileSync(a['order-id-file'], `${orderId}\n`);

    // 3. Read it back (an idempotent read: retried on UNAVAILABLE / DEADLINE_EXCEEDED).
    const got = (await this.call('GetOrder', this.orders, 'GetOrder', { order_id: orderId },
      { md: this.buyerMd, retry: true })).order;
    this.check('GetOrder', got.order_id === orderId && got.status === 'ORDER_STATUS_PENDING',
      `${got.order_id} ${got.status} version ${got.version}`);

    // 4. Watch it from now on, in the background, until the stream ends by itself.
    const watcher = this.watch(orderId);
    await watcher.first;

    // 5. Pay, ship, complete. State changes are not retried here (a retry is safe only with the
    //    same payment id / tracking number; this example keeps the policy minimal).
    const paid = (await this.call('PayOrder', this.orders, 'PayOrder',
      { order_id: orderId, payment_id: `pay-${key}`, amount_cents: order.total_cents },
      { md: this.buyerMd })).order;
    this.check('PayOrder', paid.status === 'ORDER_STATUS_PAID',
      `${paid.status} with payment ${paid.payment_id}, version ${paid.version}`);
    const shipped = (await this.call('ShipOrder', this.orders, 'ShipOrder',
      { order_id: orderId, tracking_number: 'SF-JS-1' }, { md: this.adminMd })).order;
    this.check('ShipOrder', shipped.status === 'ORDER_STATUS_SHIPPED',
      `${shipped.status}, tracking ${shipped.tracking_number}, version ${shipped.version}`);
    const done = (await this.call('CompleteOrder', this.orders, 'CompleteOrder',
      { order_id: orderId }, { md: this.adminMd })).order;
    this.check('CompleteOrder', done.status === 'ORDER_STATUS_COMPLETED',
      `${done.status}, version ${done.version}`);

    // 6. The watch must have ended on its own after the terminal status.
    const watched = await watcher.done;
    const expected = ['ORDER_STATUS_PENDING', 'ORDER_STATUS_PAID', 'ORDER_STATUS_SHIPPED', 'ORDER_STATUS_COMPLETED'];
    this.check('WatchOrder', watched.error === null
      && JSON.stringify(watched.statuses) === JSON.stringify(expected),
    `stream ended (${watched.error === null ? 'by itself' : watched.error}) after `
      + `${watched.statuses.join(' -> ') || 'nothing'}`);

    // 7. Errors: each is final, so the policy makes exactly one attempt.
    await this.expectError('CreateOrder quantity 0', Code.INVALID_ARGUMENT, this.orders, 'CreateOrder',
      { idempotency_key: `js-${crypto.randomUUID()}`, user_id: a.user, items: [{ sku: a.sku, quantity: 0 }] },
      this.buyerMd);
    await this.expectError('CreateOrder over stock', Code.FAILED_PRECONDITION, this.orders, 'CreateOrder',
      { idempotency_key: `js-${crypto.randomUUID()}`, user_id: a.user, items: [{ sku: a.sku, quantity: a.stock + 1 }] },
      this.buyerMd);
    await this.expectError('PayOrder completed', Code.FAILED_PRECONDITION, this.orders, 'PayOrder',
      { order_id: orderId, payment_id: `pay-other-${key}`, amount_cents: order.total_cents }, this.buyerMd);

    // 8. The final state, and the stock: the ordered units are sold.
    const final = (await this.call('GetOrder', this.orders, 'GetOrder', { order_id: orderId },
      { md: this.buyerMd, retry: true })).order;
    this.check('GetOrder', final.status === 'ORDER_STATUS_COMPLETED' && final.version === 4,
      `${final.status} version ${final.version}`);
    const after = (await this.call('GetStock', this.inventory, 'GetStock', { sku: a.sku },
      { md: this.buyerMd, retry: true })).stock;
    this.check('GetStock', after.sold === a.quantity,
      `${after.sku}: available ${after.available}, reserved ${after.reserved}, sold ${after.sold}`);
  }
}

function metadata(token) {
  const md = new grpc.Metadata();
  if (token) md.add('authorization', `Bearer ${token}`);
  return md;
}

async function main() {
  const config = Object.fromEntries(Object.entries(OPTIONS).map(([name, o]) => [name, { type: o.type, default: o.default }]));
  const { values } = parseArgs({ options: config, strict: true });
  if (values.help) {
    console.log(usage());
    return 0;
  }
  const args = { ...values };
  for (const name of ['stock', 'quantity', 'price-cents', 'timeout', 'first-deadline-ms', 'watch-timeout', 'max-attempts']) {
    args[name] = Number(values[name]);
    if (!Number.isFinite(args[name])) throw new Error(`--${name}: not a number: ${values[name]}`);
  }
  const flow = new Flow(args);
  console.log(`order-api ${args['order-api']}, inventory-svc ${args.inventory}, `
    + `${args['tls-ca'] ? 'TLS' : 'plaintext'}, `
    + `${args.token || args['admin-token'] ? 'with' : 'without'} bearer tokens`);
  try {
    await flow.run();
  } catch (error) {
    if (error.code === undefined) throw error;
    flow.failures.push(`${codeName(error.code)}: ${error.details}`);
    console.log(`FAIL unexpected ${codeName(error.code)}: ${error.details}`);
  } finally {
    flow.close();
  }
  if (flow.failures.length) {
    console.log(`FAILED: ${flow.failures.length} step(s) did not behave as expected`);
    return 1;
  }
  console.log('OK');
  return 0;
}

main().then((code) => { process.exitCode = code; }, (error) => {
  console.error(`error: ${error.stack || error}`);
  process.exitCode = 2;
});
