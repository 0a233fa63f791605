// Runs the guide's examples against a running Till (dev mode: the demo shopper exists).
//   BASE_URL=http://127.0.0.1:8080 node dist/run.js
// Each step throws when Till answers otherwise than the guide says.
import { randomUUID } from 'node:crypto';
import type { GraphQLFormattedError } from 'graphql';
import { ApolloError } from '@apollo/client/core/index.js';

import { apolloClient } from './apollo.js';
import { codeOf, retryable, type OutOfStock } from './errors.js';
import { InStock, MyOrders, PlaceOrder, Refresh, SignIn, StockChanged } from './operations.js';
import { Session } from './session.js';
import { urqlClient } from './urql.js';

const base = (process.env.BASE_URL ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
const password = process.env.DEMO_PASSWORD ?? 'till-demo-password';

function check(ok: unknown, message: string): asserts ok {
  if (!ok) throw new Error(message);
}

// Signing in needs no token: a client without a session.
const anonymous = apolloClient(base, new Session(null, () => Promise.reject(new Error('no session'))));
const signedIn = await anonymous.mutate({ mutation: SignIn, variables: { email: 'shopper@till.dev', password } });
check(signedIn.data, 'login answered no data');
const session = new Session(signedIn.data.login, async (refreshToken) => {
  const r = await anonymous.mutate({ mutation: Refresh, variables: { refreshToken } });
  check(r.data, 'refreshToken answered no data');
  return r.data.refreshToken;
});
const apollo = apolloClient(base, session);
console.log('signed in as the demo shopper');

// A typed query: `products` and its fields are typed from the schema.
const page = await apollo.query({ query: InStock, variables: { first: 2 } });
const product = page.data.products.edges[0]?.node;
check(product, 'no product in stock');
console.log(`product ${product.sku}: ${product.available} available at ${product.price.amount} ${product.price.currency}`);

// Refresh: the next requests use the new access token (the old refresh token is spent).
const before = session.tokens?.refreshToken;
await session.refresh();
check(session.tokens?.refreshToken !== before, 'the refresh token did not rotate');
console.log('refreshed the session');

// A mutation with an Idempotency-Key: sent twice (as a retry after a lost answer
// would be), it places one order and answers the same both times.
const key = randomUUID();
const place = () =>
  apollo.mutate({
    mutation: PlaceOrder,
    variables: { product: product.id, quantity: 1 },
    context: { headers: { 'Idempotency-Key': key } },
  });
const first = await place();
const again = await place();
check(first.data && again.data, 'placeOrder answered no data');
check(first.data.placeOrder.orderId === again.data.placeOrder.orderId, 'the retry placed a second order');
console.log(`placed ${first.data.placeOrder.orderId}; the retry with the same key got the same order`);

// Read your write: the next read sent with the consistency token waits (bounded) until
// the read models include the order.
const mine = await apollo.query({
  query: MyOrders,
  context: { headers: { 'X-Consistency-Token': first.data.placeOrder.consistencyToken } },
});
check(
  mine.data.myOrders.edges.some((e) => e.node.id === first.data?.placeOrder.orderId),
  'the order is missing from myOrders read with its token',
);
console.log('myOrders read with the consistency token shows the order');

// Error handling by code: more than is available is OUT_OF_STOCK, with the details.
const tooMany = Math.min(10_000, product.available + 1_000);
try {
  await apollo.mutate({ mutation: PlaceOrder, variables: { product: product.id, quantity: tooMany } });
  throw new Error(`an order of ${tooMany} units was placed`);
} catch (error) {
  const errors: readonly GraphQLFormattedError[] = error instanceof ApolloError ? error.graphQLErrors : [];
  const [e] = errors;
  check(e && codeOf(e) === 'OUT_OF_STOCK', `expected OUT_OF_STOCK, got ${String(error)}`);
  const short = e.extensions as unknown as OutOfStock;
  check(!retryable(codeOf(e)), 'OUT_OF_STOCK is not worth a blind retry');
  console.log(`OUT_OF_STOCK: ${short.sku} requested ${short.requested}, available ${short.available}`);
}

// A subscription through urql and graphql-ws: an order placed meanwhile changes the stock.
const urql = urqlClient(base, session);
const change = new Promise<{ sku: string; available: number }>((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('no stockChanged within 20 s')), 20_000);
  const { unsubscribe } = urql.subscription(StockChanged, { product: product.id }).subscribe((result) => {
    if (result.error) {
      clearTimeout(timer);
      reject(result.error);
    } else if (result.data) {
      clearTimeout(timer);
      unsubscribe();
      resolve(result.data.stockChanged);
    }
  });
});
// The server registers the subscription a moment after the socket opens.
await new Promise((r) => setTimeout(r, 1000));
const placed = await urql.mutation(PlaceOrder, { product: product.id, quantity: 1 }).toPromise();
check(!placed.error, `placeOrder through urql: ${placed.error?.message}`);
const seen = await change;
console.log(`stockChanged: ${seen.sku} now ${seen.available} available`);
console.log('examples: all steps ok');
process.exit(0);
