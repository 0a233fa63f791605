// Audits a running server against the GraphQL-over-HTTP spec with graphql-http's
// auditServer. Fails on any error or warning. URL from $URL.
import { auditServer } from 'graphql-http';

const url = process.env.URL ?? 'http://127.0.0.1:8080/graphql';
const results = await auditServer({ url });
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
