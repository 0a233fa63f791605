// Till as an Apollo Federation v2 subgraph, end to end: a running till with
// TILL_FEDERATION=true (dev mode: demo catalog and accounts) is composed with a small
// "reviews" subgraph by @apollo/composition, and queries go through a real
// @apollo/gateway in front of both, with the caller's Authorization header forwarded to
// Till. Checks an entity reference each way (reviews -> Till's Product by sku, Till's
// Product -> reviews) and a signed-in query answered through the gateway.
// BASE_URL (till) from the environment.
import { composeServices } from '@apollo/composition';
import { ApolloGateway, RemoteGraphQLDataSource } from '@apollo/gateway';
import { ApolloServer } from '@apollo/server';
import { ApolloServerPluginInlineTraceDisabled } from '@apollo/server/plugin/disabled';
import { startStandaloneServer } from '@apollo/server/standalone';
import { buildSubgraphSchema } from '@apollo/subgraph';
import { parse } from 'graphql';

const till = process.env.BASE_URL ?? 'http://127.0.0.1:8080';
const password = process.env.DEMO_PASSWORD ?? 'till-demo-password';

function check(ok, message) {
  if (!ok) throw new Error(message);
}

async function post(url, query, variables = {}, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  return { status: res.status, body: await res.json() };
}

// Till's subgraph SDL, as a gateway's composition reads it.
const service = await post(`${till}/graphql`, '{ _service { sdl } }');
check(!service.body.errors, `_service: ${JSON.stringify(service.body)}`);
const tillSdl = service.body.data._service.sdl;

// Two products of the demo catalog, to review.
const page = await post(`${till}/graphql`, '{ products(first: 2) { edges { node { sku name } } } }');
check(!page.body.errors, `products: ${JSON.stringify(page.body)}`);
const [first, second] = page.body.data.products.edges.map((e) => e.node);

// The other subgraph: reviews of Till's products, which it knows by SKU.
const reviewsSdl = `
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key"])
  type Review { id: ID! body: String! product: Product! }
  type Product @key(fields: "sku") { sku: String! reviews: [Review!]! }
  type Query { reviews: [Review!]! }
`;
const reviews = [
  { id: 'r1', body: 'Sold out in seconds', sku: first.sku },
  { id: 'r2', body: 'Worth the wait', sku: second.sku },
];
const reviewsServer = new ApolloServer({
  plugins: [ApolloServerPluginInlineTraceDisabled()],
  schema: buildSubgraphSchema({
    typeDefs: parse(reviewsSdl),
    resolvers: {
      Query: { reviews: () => reviews },
      Review: { product: (r) => ({ __typename: 'Product', sku: r.sku }) },
      Product: {
        __resolveReference: (ref) => ({ sku: ref.sku }),
        reviews: (p) => reviews.filter((r) => r.sku === p.sku),
      },
    },
  }),
});
const { url: reviewsUrl } = await startStandaloneServer(reviewsServer, { listen: { port: 0 } });

// Composition, as a CI pipeline or Rover would do it.
const composed = composeServices([
  { name: 'till', url: `${till}/graphql`, typeDefs: parse(tillSdl) },
  { name: 'reviews', url: reviewsUrl, typeDefs: parse(reviewsSdl) },
]);
check(!composed.errors, `composition failed: ${(composed.errors ?? []).map((e) => e.message).join('\n')}`);
console.log(`composed a supergraph of till and reviews (${composed.supergraphSdl.length} bytes)`);

// The gateway forwards the caller's Authorization header to every subgraph.
const gateway = new ApolloGateway({
  supergraphSdl: composed.supergraphSdl,
  buildService: ({ url }) =>
    new RemoteGraphQLDataSource({
      url,
      willSendRequest({ request, context }) {
        if (context.authorization) request.http.headers.set('authorization', context.authorization);
      },
    }),
});
const gatewayServer = new ApolloServer({ gateway });
const { url: gatewayUrl } = await startStandaloneServer(gatewayServer, {
  listen: { port: 0 },
  context: async ({ req }) => ({ authorization: req.headers.authorization }),
});

try {
  // reviews -> Till: the gateway resolves each review's product through Till's _entities.
  const a = await post(gatewayUrl, '{ reviews { body product { sku name available price { minorUnits currency } } } }');
  check(a.status === 200 && !a.body.errors, `reviews: ${JSON.stringify(a.body)}`);
  check(a.body.data.reviews.length === 2, JSON.stringify(a.body));
  check(a.body.data.reviews[0].product.name === first.name, `the product from Till: ${JSON.stringify(a.body)}`);
  check(typeof a.body.data.reviews[1].product.available === 'number', JSON.stringify(a.body));
  console.log(`reviews -> till: ${JSON.stringify(a.body.data.reviews[0])}`);

  // Till -> reviews, with the caller signed in: the header reaches Till.
  const login = await post(
    `${till}/graphql`,
    'mutation($e: String!, $p: String!) { login(input: { email: $e, password: $p }) { accessToken } }',
    { e: 'shopper@till.dev', p: password },
  );
  check(!login.body.errors, `login: ${JSON.stringify(login.body)}`);
  const token = login.body.data.login.accessToken;
  const b = await post(
    gatewayUrl,
    `{ me { email } product(by: { sku: ${JSON.stringify(first.sku)} }) { name reviews { body } } }`,
    {},
    token,
  );
  check(b.status === 200 && !b.body.errors, `me and product: ${JSON.stringify(b.body)}`);
  check(b.body.data.me?.email === 'shopper@till.dev', `the forwarded token: ${JSON.stringify(b.body)}`);
  check(b.body.data.product.reviews[0]?.body === 'Sold out in seconds', JSON.stringify(b.body));
  console.log(`till -> reviews: ${JSON.stringify(b.body.data)}`);

  // Without the header Till answers as it would directly: me needs a signed-in caller.
  const c = await post(gatewayUrl, '{ me { email } }');
  check(c.body.errors?.[0]?.extensions?.code === 'UNAUTHENTICATED', `anonymous me: ${JSON.stringify(c.body)}`);
  console.log('federation: composition and gateway round trips ok');
} finally {
  await gatewayServer.stop();
  await reviewsServer.stop();
}
