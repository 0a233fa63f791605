// Error handling by code: `extensions.code` is one of the SDL's `ErrorCode` values
// (docs/errors.md says which are worth a retry and after what).
import type { GraphQLFormattedError } from 'graphql';
import type { ErrorCode } from './gql/schema.js';

export function codeOf(error: GraphQLFormattedError): ErrorCode | undefined {
  return error.extensions?.code as ErrorCode | undefined;
}

/** Whether sending the same request again (same Idempotency-Key) may succeed. */
export function retryable(code: ErrorCode | undefined): boolean {
  switch (code) {
    case 'SERVICE_UNAVAILABLE':
    case 'IDEMPOTENCY_IN_PROGRESS':
    case 'THROTTLED':
    case 'TIMEOUT':
      return true;
    default:
      return false;
  }
}

/** Details of OUT_OF_STOCK: which product was short, by how much. */
export interface OutOfStock {
  productId: string;
  sku: string;
  requested: number;
  available: number;
}
