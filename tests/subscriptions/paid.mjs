// The graphql-ws reference client subscribes to orderStatusChanged on a running till
// (dev mode: demo accounts and the built-in fake payment provider) and must receive
// PAID after payOrder with tok_ok. BASE_URL from the environment.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const base = process.env.BASE_URL ?? 'http://127.0.0.1:8080';
const password = process.env.DEMO_PASSWORD ?? 'till-demo-password';

async function gql(query, variables = {}, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${base}/graphql`, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  const body = await res.json();
  if (body.errors) throw new Error(`${query.slice(0, 40)}...: ${JSON.stringify(body.errors)}`);
  return body.data;
}

const { login } = await gql(
  'mutation($e: String!, $p: String!) { login(input: { email: $e, password: $p }) { accessToken } }',
  { e: 'shopper@till.dev', p: password },
);
const token = login.accessToken;
const { products } = await gql('{ products(first: 1, filter: { inStock: true }) { edges { node { id sku } } } }');
const product = products.edges[0].node;
const { placeOrder } = await gql(
  'mutation($p: ID!) { placeOrder(input: { lines: [{ productId: $p, quantity: 1 }] }) { orderId } }',
  { p: product.id },
  token,
);
const orderId = placeOrder.orderId;

const client = createClient({
  url: base.replace(/^http/, 'ws') + '/graphql',
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
});

const statuses = [];
const done = new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`no PAID within 20 s; saw ${JSON.stringify(statuses)}`)), 20000);
  client.subscribe(
    { query: 'subscription($o: ID!) { orderStatusChanged(orderId: $o) { id status } }', variables: { o: orderId } },
    {
      next: (msg) => {
        if (msg.errors) { clearTimeout(timer); reject(new Error(JSON.stringify(msg.errors))); return; }
        const status = msg.data.orderStatusChanged.status;
        statuses.push(status);
        if (status === 'PAID') { clearTimeout(timer); resolve(); }
      },
      error: (err) => { clearTimeout(timer); reject(err instanceof Error ? err : new Error(JSON.stringify(err))); },
      complete: () => {},
    },
  );
});

// Pay once the subscription is established (the server acknowledged it).
await new Promise((r) => setTimeout(r, 500));
await gql(
  'mutation($o: ID!, $t: String!) { payOrder(input: { orderId: $o, paymentMethodToken: $t }) { orderId } }',
  { o: orderId, t: 'tok_ok' },
  token,
);
try {
  await done;
  console.log(`graphql-ws: order ${orderId} (${product.sku}) went ${statuses.join(' -> ')}`);
} finally {
  await client.dispose();
}
