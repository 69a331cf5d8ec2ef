import { watch, type FSWatcher } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { MAX_PEM_BYTES, type CertificateInput, type TlsMinVersion } from './certificate.ts';

export interface FileCertificateOptions {
  /** `--tls-cert`/`--tls-key` pairs, in order: the first is the default certificate. */
  readonly pairs: readonly { readonly cert: string; readonly key: string }[];
  /** `--tls-dir`: every `<name>.crt` + `<name>.key`, or `<name>.pem` holding both. */
  readonly dir: string | undefined;
  readonly minVersion: TlsMinVersion;
  /** Fallback when the platform's change notifications miss a change (network file systems). */
  readonly pollIntervalMs: number;
  readonly onInputs: (inputs: CertificateInput[]) => void;
  readonly onError: (error: unknown) => void;
}

/** Files in a directory at most: more is a mistake, not a certificate store. */
const MAX_DIR_FILES = 10_000;
const SETTLE_MS = 50;

/**
 * Certificates from files. Reads every file once at start, then again when a directory holding
 * one reports a change (a replacement by rename included) or, at the latest, every poll interval;
 * a re-read hands the inputs to the store, which checks only what changed. A file that cannot be
 * read gives an input that fails its checks, so the store keeps its last good certificate and
 * shows why.
 */
export class FileCertificateSource {
  private readonly watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private settle: NodeJS.Timeout | undefined;
  private reading = false;
  private again = false;
  private closed = false;

  constructor(private readonly options: FileCertificateOptions) {}

  /** The first read, then watching. */
  async start(): Promise<void> {
    await this.read();
    const dirs = new Set(this.options.pairs.flatMap((p) => [dirname(p.cert), dirname(p.key)]));
    if (this.options.dir) dirs.add(this.options.dir);
    for (const dir of dirs) {
      try {
        const w = watch(dir, { persistent: false }, () => this.soon());
        w.on('error', () => undefined);
        this.watchers.push(w);
      } catch {
        // No notifications for this directory: the poll still sees its changes.
      }
    }
    this.timer = setInterval(() => this.soon(), this.options.pollIntervalMs);
    this.timer.unref();
  }

  close(): void {
    this.closed = true;
    for (const w of this.watchers) w.close();
    clearInterval(this.timer);
    clearTimeout(this.settle);
  }

  /** Several events for one replacement (write, rename) make one read. */
  private soon(): void {
    if (this.closed || this.settle) return;
    this.settle = setTimeout(() => {
      this.settle = undefined;
      void this.read();
    }, SETTLE_MS);
    this.settle.unref();
  }

  private async read(): Promise<void> {
    if (this.reading) {
      this.again = true;
      return;
    }
    this.reading = true;
    try {
      const inputs: CertificateInput[] = [];
      for (const pair of this.options.pairs) {
        inputs.push(pairInput(basename(pair.cert, extname(pair.cert)), pair.cert, await readBounded(pair.cert), await readBounded(pair.key), this.options.minVersion));
      }
      if (this.options.dir) inputs.push(...(await this.readDir(this.options.dir)));
      if (!this.closed) this.options.onInputs(inputs);
    } catch (err) {
      this.options.onError(err);
    } finally {
      this.reading = false;
      if (this.again && !this.closed) {
        this.again = false;
        void this.read();
      }
    }
  }

  private async readDir(dir: string): Promise<CertificateInput[]> {
    const files = (await readdir(dir)).slice(0, MAX_DIR_FILES).sort();
    const present = new Set(files);
    const out: CertificateInput[] = [];
    for (const file of files) {
      const ext = extname(file);
      const name = basename(file, ext);
      if (name.startsWith('.')) continue;
      if (ext === '.pem') {
        const text = await readBounded(join(dir, file));
        out.push(pairInput(name, join(dir, file), text, text, this.options.minVersion));
      } else if (ext === '.crt' && present.has(`${name}.key`)) {
        out.push(pairInput(name, join(dir, file), await readBounded(join(dir, file)), await readBounded(join(dir, `${name}.key`)), this.options.minVersion));
      }
    }
    return out;
  }
}

type FileText = { readonly text: string } | { readonly error: string };

function pairInput(name: string, certPath: string, cert: FileText, key: FileText, minVersion: TlsMinVersion): CertificateInput {
  const readError = 'error' in cert ? cert.error : 'error' in key ? key.error : undefined;
  return {
    name,
    source: `file:${certPath}`,
    certPem: 'text' in cert ? cert.text : '',
    keyPem: 'text' in key ? key.text : '',
    minVersion,
    ...(readError ? { readError } : {}),
  };
}

/** The file's text, or why it cannot be used (missing, unreadable, not a file, too large). */
async function readBounded(path: string): Promise<FileText> {
  try {
    const s = await stat(path);
    if (!s.isFile()) return { error: `${path} is not a file` };
    if (s.size > MAX_PEM_BYTES) return { error: `${path} is larger than ${MAX_PEM_BYTES} bytes` };
    return { text: await readFile(path, 'utf8') };
  } catch (err) {
    return { error: `${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})` };
  }
}
