// Audits a running server against the GraphQL-over-HTTP spec with graphql-http's
// auditServer. Fails on any error or warning. URL from $URL.
//
// Till refuses GET requests without a preflight-forcing header (CSRF prevention, see
// docs/security.md), as a browser client would send it; the audit's requests carry it
// the same way.
import { auditServer } from 'graphql-http';

const url = process.env.URL ?? 'http://127.0.0.1:8080/graphql';
const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers ?? {});
  headers.set('GraphQL-Require-Preflight', '1');
  return fetch(input, { ...init, headers });
};
const results = await auditServer({ url, fetchFn });
const counts = {};
let bad = 0;
for (const r of results) {
  counts[r.status] = (counts[r.status] ?? 0) + 1;
  if (r.status === 'error' || r.status === 'warn') {
    bad += 1;
    console.log(`${r.status.toUpperCase()} ${r.id} ${r.name}: ${r.reason ?? ''}`);
  }
}
console.log(`graphql-http audit of ${url}: ${JSON.stringify(counts)}`);
process.exit(bad === 0 ? 0 : 1);
