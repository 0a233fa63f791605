// k6 scenarios that need a different request each time (oha sends one body):
//   SCENARIO=checkout  placeOrder with 2 distinct random products, random customer,
//                      for DURATION with VUS connections
//   SCENARIO=flash     BUYERS orders of 1 unit of FLASH_PRODUCT, one per customer,
//                      shared by VUS connections
// Every answer is classified by GraphQL error code (or "ok"), so the summary says how
// many got an order and how many OUT_OF_STOCK, THROTTLED, ...
// Inputs (env): BASE, DATA (JSON file: {"tokens": [...], "products": [...]}), OUT
// (summary JSON path), SCENARIO, DURATION, VUS, BUYERS, FLASH_PRODUCT.
import http from 'k6/http';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';

const data = JSON.parse(open(__ENV.DATA));
const scenario = __ENV.SCENARIO || 'checkout';
const vus = parseInt(__ENV.VUS || '64', 10);
// One counter per outcome (k6 reports tagged sub-metrics only for thresholds).
const CODES = ['ok', 'OUT_OF_STOCK', 'THROTTLED', 'SERVICE_UNAVAILABLE', 'INTERNAL', 'CONFLICT',
  'BAD_USER_INPUT', 'UNAUTHENTICATED', 'FORBIDDEN', 'NOT_FOUND', 'other'];
const outcomes = Object.fromEntries(CODES.map((c) => [c, new Counter('outcome_' + c)]));

export const options = {
  discardResponseBodies: false,
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
      checkout: {
        executor: 'constant-vus',
        vus,
        duration: __ENV.DURATION || '15s',
      },
    },
};

const PLACE = 'mutation Buy($lines: [OrderLineInput!]!) { placeOrder(input: {lines: $lines}) { orderId } }';

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

function place(token, lines) {
  const res = http.post(__ENV.BASE + '/graphql', JSON.stringify({ query: PLACE, variables: { lines } }), {
    headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token },
  });
  let code = 'HTTP_' + res.status;
  if (res.status === 200) {
    try {
      const body = res.json();
      if (body.data && body.data.placeOrder && body.data.placeOrder.orderId) {
        code = 'ok';
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
}

export default function () {
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
  place(pick(data.tokens), [{ productId: a, quantity: 1 }, { productId: b, quantity: 1 }]);
}

export function handleSummary(summary) {
  const d = summary.metrics.http_req_duration.values;
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
    requests: summary.metrics.http_reqs.values.count,
    requestsPerSec: summary.metrics.http_reqs.values.rate,
    ms: { p50: d.med, p90: d['p(90)'], p95: d['p(95)'], p99: d['p(99)'], max: d.max },
    codes,
  };
  return { [__ENV.OUT]: JSON.stringify(out, null, 2), stdout: JSON.stringify(out) + '\n' };
}
