// k6 scenarios that need a different request each time (oha sends one body):
//   SCENARIO=checkout  placeOrder with 2 distinct random products, random customer,
//                      for DURATION with VUS connections
//   SCENARIO=flash     BUYERS orders of 1 unit of FLASH_PRODUCT, one per customer,
//                      shared by VUS connections
//   SCENARIO=catalog   product(id:) of a random product out of the whole catalog
//                      (DATA's "catalog"), for DURATION with VUS connections: fills
//                      the cache past its bound when the catalog is large
// Every answer is classified by GraphQL error code (or "ok"), so the summary says how
// many got an order and how many OUT_OF_STOCK, THROTTLED, ...
// In checkout, a fraction READBACK (default 0.1) of the placed orders is read back at
// once with the order's X-Consistency-Token: the server holds that read until every
// read model has the order, so its duration bounds the commit -> visible lag from
// above (it adds one read's own time) and is reported as `visible_ms`.
// Inputs (env): BASE, DATA (JSON file: {"tokens": [...], "products": [...],
// "catalog": [...]}), OUT
// (summary JSON path), SCENARIO, DURATION, VUS, BUYERS, FLASH_PRODUCT, READBACK.
import http from 'k6/http';
import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';

const data = JSON.parse(open(__ENV.DATA));
const scenario = __ENV.SCENARIO || 'checkout';
const vus = parseInt(__ENV.VUS || '64', 10);
// One counter per outcome (k6 reports tagged sub-metrics only for thresholds).
const CODES = ['ok', 'OUT_OF_STOCK', 'THROTTLED', 'SERVICE_UNAVAILABLE', 'INTERNAL', 'CONFLICT',
  'BAD_USER_INPUT', 'UNAUTHENTICATED', 'FORBIDDEN', 'NOT_FOUND', 'other'];
const outcomes = Object.fromEntries(CODES.map((c) => [c, new Counter('outcome_' + c)]));
const visible = new Trend('visible_ms', true);
const readbackFailed = new Counter('readback_failed');
const readback = parseFloat(__ENV.READBACK || '0.1');
// The requests the summary reports on (read-backs are tagged apart).
const NAME = scenario === 'catalog' ? 'product' : 'placeOrder';

export const options = {
  discardResponseBodies: false,
  // A threshold makes k6 report the placeOrder-only sub-metric used in the summary.
  thresholds: {
    [`http_req_duration{name:${NAME}}`]: ['max>=0'],
    [`http_reqs{name:${NAME}}`]: ['count>=0'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
  scenarios: scenario === 'flash'
    ? {
      flash: {
        executor: 'shared-iterations',
        vus,
        iterations: parseInt(__ENV.BUYERS || '2000', 10),
        maxDuration: '10m',
      },
    }
    : {
      [scenario]: {
        executor: 'constant-vus',
        vus,
        duration: __ENV.DURATION || '15s',
      },
    },
};

const PLACE = 'mutation Buy($lines: [OrderLineInput!]!) { placeOrder(input: {lines: $lines}) { orderId consistencyToken } }';
const READ = 'query Placed($id: ID!) { order(id: $id) { status } }';
const PRODUCT = 'query Product($id: ID!) { product(id: $id) { id sku name price { amount currency } available categoryPath { name } } }';

function browse(token) {
  const res = http.post(__ENV.BASE + '/graphql', JSON.stringify({ query: PRODUCT, variables: { id: pick(data.catalog) } }), {
    headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token },
    tags: { name: 'product' },
  });
  let code = 'HTTP_' + res.status;
  try {
    const body = res.json();
    if (res.status === 200 && body.data && body.data.product) {
      code = 'ok';
    } else if (body.errors && body.errors.length) {
      code = (body.errors[0].extensions || {}).code || 'NO_CODE';
    }
  } catch (e) {
    code = 'BAD_JSON';
  }
  (outcomes[code] || outcomes.other).add(1);
}

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

function place(token, lines) {
  const res = http.post(__ENV.BASE + '/graphql', JSON.stringify({ query: PLACE, variables: { lines } }), {
    headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token },
    tags: { name: 'placeOrder' },
  });
  let code = 'HTTP_' + res.status;
  let placed = null;
  if (res.status === 200) {
    try {
      const body = res.json();
      if (body.data && body.data.placeOrder && body.data.placeOrder.orderId) {
        code = 'ok';
        placed = body.data.placeOrder;
      } else if (body.errors && body.errors.length) {
        code = (body.errors[0].extensions || {}).code || 'NO_CODE';
      }
    } catch (e) {
      code = 'BAD_JSON';
    }
  }
  if (outcomes[code]) {
    outcomes[code].add(1);
  } else {
    outcomes.other.add(1);
    console.warn('unexpected answer: ' + code + ' ' + String(res.body).slice(0, 200));
  }
  return placed;
}

// Reads a just-placed order with its consistency token; records how long it took.
function readBack(token, placed) {
  const res = http.post(__ENV.BASE + '/graphql', JSON.stringify({ query: READ, variables: { id: placed.orderId } }), {
    headers: {
      'content-type': 'application/json',
      authorization: 'Bearer ' + token,
      'x-consistency-token': placed.consistencyToken,
    },
  });
  let ok = false;
  try {
    const body = res.json();
    ok = res.status === 200 && body.data && body.data.order && body.data.order.status === 'PENDING_PAYMENT';
  } catch (e) {
    ok = false;
  }
  if (ok) {
    visible.add(res.timings.duration);
  } else {
    readbackFailed.add(1);
  }
}

export default function () {
  if (scenario === 'catalog') {
    browse(data.tokens[0]);
    return;
  }
  if (scenario === 'flash') {
    const i = exec.scenario.iterationInTest;
    place(data.tokens[i % data.tokens.length], [{ productId: __ENV.FLASH_PRODUCT, quantity: 1 }]);
    return;
  }
  const a = pick(data.products);
  let b = pick(data.products);
  while (b === a && data.products.length > 1) {
    b = pick(data.products);
  }
  const token = pick(data.tokens);
  const placed = place(token, [{ productId: a, quantity: 1 }, { productId: b, quantity: 1 }]);
  if (placed && Math.random() < readback) {
    readBack(token, placed);
  }
}

export function handleSummary(summary) {
  // http_req_duration of the scenario's own requests only (read-backs are tagged apart).
  const d = (summary.metrics[`http_req_duration{name:${NAME}}`] || summary.metrics.http_req_duration).values;
  const v = summary.metrics.visible_ms ? summary.metrics.visible_ms.values : null;
  const codes = {};
  for (const c of CODES) {
    const m = summary.metrics['outcome_' + c];
    if (m && m.values.count) {
      codes[c] = m.values.count;
    }
  }
  const out = {
    tool: 'k6',
    scenario,
    requests: summary.metrics[`http_reqs{name:${NAME}}`].values.count,
    requestsPerSec: summary.metrics[`http_reqs{name:${NAME}}`].values.rate,
    ms: { p50: d.med, p90: d['p(90)'], p95: d['p(95)'], p99: d['p(99)'], max: d.max },
    codes,
    visible: v ? { p50: v.med, p95: v['p(95)'], p99: v['p(99)'], max: v.max } : null,
    readbackFailed: summary.metrics.readback_failed ? summary.metrics.readback_failed.values.count : 0,
  };
  return { [__ENV.OUT]: JSON.stringify(out, null, 2), stdout: JSON.stringify(out) + '\n' };
}
