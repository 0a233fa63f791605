// One client on an idle server, as a frontend developer tries it: what it costs to
// see one's own write. Each iteration sends, one after the other:
//   bare       placeOrder { orderId }
//   payload    placeOrder { orderId order { id status total { amount } } }: the
//              payload's order waits until the read models have the order
//   token      placeOrder { orderId consistencyToken }, then at once
//   token-read order(id:) { id status total { amount } } with X-Consistency-Token
//   plain-read order(id:) of the `bare` order, without a token (the same read, never
//              cached before, once the token read has shown the read models past it)
// and records each request's duration in its own trend (`token_total` is the mutation
// and its read together). Every answer must be an order: anything else fails the run.
// Inputs (env): BASE, DATA (JSON: {"tokens": [...], "products": [...]}), OUT (summary
// JSON path), DURATION.
import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';

const data = JSON.parse(open(__ENV.DATA));
const SHAPES = ['bare', 'payload', 'token', 'token_read', 'token_total', 'plain_read'];
const trends = Object.fromEntries(SHAPES.map((s) => [s, new Trend(s + '_ms', true)]));
const failed = new Counter('failed');

export const options = {
  discardResponseBodies: false,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
  scenarios: {
    ryw: { executor: 'constant-vus', vus: 1, duration: __ENV.DURATION || '15s' },
  },
};

const token = data.tokens[0];
const headers = { 'content-type': 'application/json', authorization: 'Bearer ' + token };
const PLACE = 'mutation Place($a: ID!, $b: ID!) { placeOrder(input: {lines: '
  + '[{productId: $a, quantity: 1}, {productId: $b, quantity: 1}]}) { SELECTION } }';
const READ = 'query Order($id: ID!) { order(id: $id) { id status total { amount } } }';

function pick() {
  const a = Math.floor(Math.random() * data.products.length);
  let b = Math.floor(Math.random() * (data.products.length - 1));
  if (b >= a) b += 1;
  return { a: data.products[a], b: data.products[b] };
}

function post(query, variables, extra) {
  const res = http.post(__ENV.BASE + '/graphql', JSON.stringify({ query, variables }),
    { headers: Object.assign({}, headers, extra || {}) });
  let body = null;
  try { body = res.json(); } catch (e) { body = null; }
  if (res.status !== 200 || !body || body.errors) {
    failed.add(1);
    console.error(`failed: ${res.status} ${res.body}`);
    return { res, data: null };
  }
  return { res, data: body.data };
}

function place(selection) {
  return post(PLACE.replace('SELECTION', selection), pick());
}

export default function () {
  const bare = place('orderId');
  trends.bare.add(bare.res.timings.duration);

  const payload = place('orderId order { id status total { amount } }');
  trends.payload.add(payload.res.timings.duration);
  if (payload.data && (!payload.data.placeOrder.order
      || payload.data.placeOrder.order.id !== payload.data.placeOrder.orderId)) {
    failed.add(1);
    console.error('payload without its order: ' + JSON.stringify(payload.data));
  }

  const written = place('orderId consistencyToken');
  trends.token.add(written.res.timings.duration);
  if (!written.data) return;
  const { orderId, consistencyToken } = written.data.placeOrder;
  const read = post(READ, { id: orderId }, { 'x-consistency-token': consistencyToken });
  trends.token_read.add(read.res.timings.duration);
  trends.token_total.add(written.res.timings.duration + read.res.timings.duration);
  if (read.data && (!read.data.order || read.data.order.id !== orderId)) {
    failed.add(1);
    console.error('token read without its order: ' + JSON.stringify(read.data));
  }

  if (!bare.data) return;
  const plain = post(READ, { id: bare.data.placeOrder.orderId });
  trends.plain_read.add(plain.res.timings.duration);
  if (plain.data && !plain.data.order) {
    failed.add(1);
    console.error('plain read without its order');
  }
}

export function handleSummary(summary) {
  const out = { failed: (summary.metrics.failed || { values: { count: 0 } }).values.count };
  for (const s of SHAPES) {
    const m = summary.metrics[s + '_ms'];
    out[s] = m ? { p50: m.values.med, p90: m.values['p(90)'], p99: m.values['p(99)'] } : null;
  }
  return { [__ENV.OUT]: JSON.stringify(out, null, 1) };
}
