// k6 (k6/net/grpc, server reflection) placing orders at a fixed number of virtual users: the
// cross-check of loadgen's CreateOrder rate (scripts/bench-k6.sh runs it). Every VU keeps its
// own connection and places one unit of the SKU at a time under a fresh idempotency key.
//
// Environment: ORDER_API, INVENTORY (host:port), RUN (a unique prefix), VUS, DURATION_S, STOCK;
// REFLECT=0 with PROTO_ROOT (the repository's proto/ directory) loads the .proto files instead of
// asking the servers by reflection.
import grpc from 'k6/net/grpc';
import { check } from 'k6';
import exec from 'k6/execution';

const run = __ENV.RUN;
const sku = `${run}-HOT`;

export const options = {
  scenarios: {
    create: {
      executor: 'constant-vus',
      vus: Number(__ENV.VUS || 64),
      duration: `${__ENV.DURATION_S || 10}s`,
      gracefulStop: '10s',
    },
  },
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
};

const reflect = __ENV.REFLECT !== '0';
const client = new grpc.Client();
const inventory = new grpc.Client();
if (!reflect) {
  client.load([__ENV.PROTO_ROOT], 'orderflow/order/v1/order.proto');
  inventory.load([__ENV.PROTO_ROOT], 'orderflow/inventory/v1/inventory.proto');
}

export function setup() {
  inventory.connect(__ENV.INVENTORY, { plaintext: true, reflect });
  const answer = inventory.invoke('orderflow.inventory.v1.InventoryService/SetStock', {
    sku,
    quantity: Number(__ENV.STOCK || 1000000000),
    price_cents: 1999,
  });
  if (answer.status !== grpc.StatusOK) {
    throw new Error(`SetStock: ${JSON.stringify(answer.error)}`);
  }
  inventory.close();
}

export default function () {
  if (exec.vu.iterationInScenario === 0) {
    client.connect(__ENV.ORDER_API, { plaintext: true, reflect });
  }
  const vu = exec.vu.idInTest;
  const answer = client.invoke('orderflow.order.v1.OrderService/CreateOrder', {
    idempotency_key: `${run}-v${vu}-${exec.vu.iterationInScenario}`,
    user_id: `${run}-u${vu}`,
    items: [{ sku, quantity: 1 }],
  });
  check(answer, { 'CreateOrder OK': (r) => r && r.status === grpc.StatusOK });
}
