import { readFile } from 'node:fs/promises';
import type { ClientAuthView } from '../core/types.ts';
import { ClientCaError, parseClientAuthority, type ClientAuthority } from './client-ca.ts';

export interface ClientCaFileOptions {
  readonly file: string;
  readonly mode: ClientAuthView['mode'];
  /** The bundle read and checked at start (a bad one stops the start instead). */
  readonly initial: ClientAuthority;
  readonly pollIntervalMs: number;
  /** A new good bundle: every TLS context must take it before the next handshake. */
  readonly onChange: (authority: ClientAuthority) => void;
  readonly onRejected: (error: string) => void;
}

/**
 * The --tls-client-ca file after start: re-read every poll interval (a CA bundle changes
 * rarely, a rename or an edit in place alike), and a bundle that changed and passes every check
 * of the start replaces the one in force. One that fails keeps the last good bundle verifying
 * and is shown (`refused` in the view) until the file is good again: a half-written or wrong
 * bundle never leaves the listeners trusting nothing, or something else.
 */
export class ClientCaFile {
  private current: ClientAuthority;
  private refused: { readonly error: string; readonly at: string } | null = null;
  private timer: NodeJS.Timeout | undefined;
  private reading = false;

  constructor(private readonly options: ClientCaFileOptions) {
    this.current = options.initial;
  }

  get authority(): ClientAuthority {
    return this.current;
  }

  start(): void {
    this.timer = setInterval(() => void this.check(), this.options.pollIntervalMs);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
  }

  /** One re-read; exported for tests, which call it instead of waiting for the timer. */
  async check(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      let next: ClientAuthority;
      try {
        const text = await readFile(this.options.file, 'utf8');
        next = parseClientAuthority(text, this.options.file, this.options.mode);
      } catch (err) {
        const error = err instanceof ClientCaError ? err.message : `--tls-client-ca ${this.options.file}: cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`;
        if (this.refused?.error !== error) {
          this.refused = { error, at: new Date().toISOString() };
          this.options.onRejected(error);
        }
        return;
      }
      this.refused = null;
      if (next.pem === this.current.pem) return;
      this.current = next;
      this.options.onChange(next);
    } finally {
      this.reading = false;
    }
  }

  view(): ClientAuthView {
    return this.refused === null ? this.current.view : { ...this.current.view, refused: this.refused };
  }
}
