// Persisted documents, shared by both clients. Codegen writes the manifest
// (src/gql/persisted-documents.json: `sha256:<hex>` -> the normalized document), which
// TILL_TRUSTED_DOCUMENTS takes as it is. A client sends an operation's hash, and only
// when the server does not know it (Automatic Persisted Queries mode) the text, which
// must be the manifest's byte for byte: its SHA-256 is the hash.
import { parse, type DocumentNode } from 'graphql';

import manifest from './gql/persisted-documents.json' with { type: 'json' };

interface Entry {
  /** The SHA-256 in hex, as `extensions.persistedQuery.sha256Hash` carries it. */
  hash: string;
  /** The manifest's text of the document. */
  text: string;
  /** That text parsed: printing it (`loc.source.body`) gives the text back. */
  document: DocumentNode;
}

const byName = new Map<string, Entry>(
  Object.entries(manifest as Record<string, string>).map(([key, text]) => {
    const name = /^(?:query|mutation|subscription)\s+(\w+)/.exec(text)?.[1] ?? '';
    return [name, { hash: key.replace(/^sha256:/, ''), text, document: parse(text) }];
  }),
);

function operationName(document: DocumentNode): string | undefined {
  for (const d of document.definitions) {
    if (d.kind === 'OperationDefinition') return d.name?.value;
  }
  return undefined;
}

/** The manifest entry of a document's (named) operation. */
export function persistedDocument(document: DocumentNode): Entry {
  const name = operationName(document);
  const entry = name ? byName.get(name) : undefined;
  if (!entry) throw new Error(`operation ${name ?? '(anonymous)'} is not in the manifest: run \`npm run codegen\``);
  return entry;
}

/** The manifest entry of an operation, by its name. */
export function persistedByName(name: string): Entry | undefined {
  return byName.get(name);
}
