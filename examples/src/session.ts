// Tokens of one signed-in session: a short-lived access token (Authorization: Bearer)
// and a rotating refresh token. Refreshing replaces both; an old refresh token used again
// ends the whole session (Till treats it as stolen), so refreshes must not race.
import type { ResultOf } from '@graphql-typed-document-node/core';
import type { SignIn } from './operations.js';

export type Tokens = ResultOf<typeof SignIn>['login'];

export class Session {
  private refreshing: Promise<void> | null = null;

  constructor(
    public tokens: Tokens | null,
    private readonly exchange: (refreshToken: string) => Promise<Tokens>,
  ) {}

  authorization(): string | undefined {
    return this.tokens ? `Bearer ${this.tokens.accessToken}` : undefined;
  }

  /** One refresh at a time: concurrent callers wait for the same one. */
  refresh(): Promise<void> {
    const current = this.tokens;
    if (!current) return Promise.reject(new Error('not signed in'));
    this.refreshing ??= this.exchange(current.refreshToken)
      .then((next) => {
        this.tokens = next;
      })
      .finally(() => {
        this.refreshing = null;
      });
    return this.refreshing;
  }
}
