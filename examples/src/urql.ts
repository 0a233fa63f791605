// urql against Till: the same bearer token, persisted documents, and subscriptions
// through graphql-ws.
import { Client, fetchExchange, subscriptionExchange } from '@urql/core';
import { persistedExchange } from '@urql/exchange-persisted';
import { createClient as wsClient } from 'graphql-ws';
import WebSocket from 'ws';

import { persistedByName, persistedDocument } from './persisted.js';
import type { Session } from './session.js';

/** The request body with the manifest's text for its operation (its hash's preimage). */
function manifestText<T extends { query?: string; operationName?: string | null }>(body: T): T {
  const entry = body.operationName ? persistedByName(body.operationName) : undefined;
  return body.query && entry ? { ...body, query: entry.text } : body;
}

export function urqlClient(base: string, session: Session) {
  const ws = wsClient({
    url: `${base.replace(/^http/, 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: () => ({ Authorization: session.authorization() }),
  });
  return new Client({
    url: `${base}/graphql`,
    // Read at each request, so a refreshed token is used at once.
    fetchOptions: (): RequestInit => {
      const authorization = session.authorization();
      return { headers: authorization ? { authorization } : {} };
    },
    // urql prints documents its own way: send the manifest's text instead.
    fetch: (input, init) =>
      fetch(input, typeof init?.body === 'string' ? { ...init, body: JSON.stringify(manifestText(JSON.parse(init.body))) } : init),
    exchanges: [
      // The hash first, and the text only if the server asks (never in trusted mode).
      persistedExchange({
        enableForMutation: true,
        enableForSubscriptions: true,
        generateHash: async (_query, document) => persistedDocument(document).hash,
      }),
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          // The socket sends the text with the hash: a subscription is one message.
          const entry = request.operationName ? persistedByName(request.operationName) : undefined;
          const input = { ...request, query: entry?.text ?? request.query ?? '' };
          return {
            subscribe(sink) {
              const dispose = ws.subscribe(input, sink);
              return { unsubscribe: dispose };
            },
          };
        },
      }),
    ],
  });
}
