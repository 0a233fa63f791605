// Apollo Client against Till: the bearer token and its refresh, persisted documents
// (the hash first, the text only if the server asks), and subscriptions over
// graphql-transport-ws.
import { ApolloClient, HttpLink, InMemoryCache, from, split } from '@apollo/client/core/index.js';
import { setContext } from '@apollo/client/link/context/index.js';
import { onError } from '@apollo/client/link/error/index.js';
import { createPersistedQueryLink } from '@apollo/client/link/persisted-queries/index.js';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions/index.js';
import { fromPromise } from '@apollo/client/link/utils/index.js';
import { getMainDefinition } from '@apollo/client/utilities/index.js';
import type { DocumentNode } from 'graphql';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

import { persistedDocument } from './persisted.js';
import type { Session } from './session.js';

export function apolloClient(base: string, session: Session) {
  // Sends `Authorization` on every request; per-request headers (Idempotency-Key,
  // X-Consistency-Token) come from the operation's context and are kept.
  const auth = setContext((_, { headers }) => ({
    headers: { ...headers, ...(session.authorization() ? { authorization: session.authorization() } : {}) },
  }));
  // An expired access token: refresh once, then send the operation again.
  const refresh = onError(({ graphQLErrors, operation, forward }) => {
    if (!graphQLErrors?.some((e) => e.extensions?.code === 'UNAUTHENTICATED') || !session.tokens) return;
    return fromPromise(session.refresh()).flatMap(() => forward(operation));
  });
  // Persisted documents: the hash alone first; if the server does not know it (APQ
  // mode), the text once with it. In trusted-documents mode (TILL_TRUSTED_DOCUMENTS) the
  // manifest has every hash, so the text is never sent.
  const persisted = createPersistedQueryLink({
    generateHash: (document: DocumentNode) => persistedDocument(document).hash,
  });
  // The text sent is the manifest's, byte for byte: its SHA-256 is the hash.
  const http = new HttpLink({
    uri: `${base}/graphql`,
    print: (ast, originalPrint) =>
      ast.kind === 'Document' ? persistedDocument(ast).text : originalPrint(ast),
  });
  const ws = new GraphQLWsLink(
    createClient({
      url: `${base.replace(/^http/, 'ws')}/graphql`,
      webSocketImpl: WebSocket,
      // The token goes in connection_init; Till closes the socket (4401) when the
      // session ends or the token expires: reconnecting sends a fresh one.
      connectionParams: () => ({ Authorization: session.authorization() }),
    }),
  );
  const isSubscription = ({ query }: { query: DocumentNode }) => {
    const main = getMainDefinition(query);
    return main.kind === 'OperationDefinition' && main.operation === 'subscription';
  };
  return new ApolloClient({
    link: split(isSubscription, ws, from([refresh, auth, persisted, http])),
    cache: new InMemoryCache(),
    defaultOptions: { query: { fetchPolicy: 'no-cache' }, mutate: { fetchPolicy: 'no-cache' } },
  });
}
