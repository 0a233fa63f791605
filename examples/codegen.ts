// GraphQL Code Generator: typed operations from Till's checked-in schema, and the
// persisted-documents manifest that TILL_TRUSTED_DOCUMENTS takes as it is
// (sha256 of each normalized document -> the document).
import type { CodegenConfig } from '@graphql-codegen/cli';

const scalars = {
  DateTime: 'string',
  Date: 'string',
  BigInt: 'string',
};

const config: CodegenConfig = {
  // The checked-in contract, or a running server's (TILL_SCHEMA=http://127.0.0.1:8080/schema.graphql).
  schema: process.env.TILL_SCHEMA ?? '../schema.graphql',
  documents: ['src/**/*.ts', '!src/gql/**'],
  ignoreNoDocuments: false,
  // Relative imports with `.js`, as Node's ES modules want them.
  emitLegacyCommonJSImports: false,
  generates: {
    'src/gql/': {
      preset: 'client',
      presetConfig: {
        fragmentMasking: false,
        persistedDocuments: { hashAlgorithm: 'sha256' },
      },
      config: { scalars, enumsAsTypes: true, useTypeImports: true },
    },
    // Every schema type, ErrorCode included, for typing `extensions.code`.
    'src/gql/schema.ts': {
      plugins: ['typescript'],
      config: { scalars, enumsAsTypes: true },
    },
  },
};

export default config;
