/**
 * Certificate files: pairs in the order given, then a directory's `<name>.crt` + `<name>.key` and
 * `<name>.pem` files in name order; a file that is missing, too large or not a file becomes a
 * refusal that names it; a change on disk is read again without a restart.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { MAX_PEM_BYTES, type CertificateInput } from '../../src/tls/certificate.ts';
import { FileCertificateSource } from '../../src/tls/file-source.ts';
import { CertificateStore } from '../../src/tls/store.ts';
import * as pem from '../helpers/tls-certs.ts';

let dir: string;
let certs: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cgw-tls-files-'));
  certs = join(dir, 'certs.d');
  await mkdir(certs);
  await writeFile(join(dir, 'site.crt'), pem.DEFAULT_CERT);
  await writeFile(join(dir, 'site.key'), pem.DEFAULT_KEY);
  await writeFile(join(certs, 'b-wild.pem'), pem.WILDCARD_CERT + pem.WILDCARD_KEY);
  await writeFile(join(certs, 'a-api.crt'), pem.API_CERT);
  await writeFile(join(certs, 'a-api.key'), pem.API_KEY);
  await writeFile(join(certs, 'orphan.crt'), pem.API_V2_CERT); // no orphan.key: not a pair
  await writeFile(join(certs, '.hidden.pem'), 'ignored');
  // A prototype name is a name like any other.
  await writeFile(join(certs, '__proto__.pem'), pem.API_V2_CERT + pem.API_V2_KEY);
  await writeFile(join(certs, 'big.pem'), 'x'.repeat(MAX_PEM_BYTES + 1));
  await mkdir(join(certs, 'dir.pem'));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function source(onInputs: (inputs: CertificateInput[]) => void, pairs = [{ cert: join(dir, 'site.crt'), key: join(dir, 'site.key') }]): FileCertificateSource {
  return new FileCertificateSource({ pairs, dir: certs, minVersion: 'TLSv1.2', pollIntervalMs: 100, onInputs, onError: (err) => assert.fail(String(err)) });
}

test('pairs first, then the directory in name order (a file named __proto__ included); a file too large or not a file is refused by name; orphans and dot files are left out', async () => {
  const seen: CertificateInput[][] = [];
  const files = source((inputs) => seen.push(inputs));
  await files.start();
  files.close();
  const store = new CertificateStore();
  store.update(seen[0] ?? []);
  const view = store.view();
  assert.deepEqual(view.certificates.map((c) => c.name), ['site', '__proto__', 'a-api', 'b-wild']);
  assert.equal(view.default, 'site');
  assert.deepEqual(
    view.rejected.map((r) => [r.name, r.error.replace(certs, 'DIR')]).sort(),
    [
      ['big', `DIR/big.pem is larger than ${MAX_PEM_BYTES} bytes`],
      ['dir', 'DIR/dir.pem is not a file'],
    ],
  );
});

test('a missing pair is refused with the path that is missing', async () => {
  const seen: CertificateInput[][] = [];
  const files = source((inputs) => seen.push(inputs), [{ cert: join(dir, 'nope.crt'), key: join(dir, 'site.key') }]);
  await files.start();
  files.close();
  const store = new CertificateStore();
  store.update(seen[0] ?? []);
  assert.match(store.view().rejected.find((r) => r.name === 'nope')?.error ?? '', /nope\.crt cannot be read \(ENOENT\)/);
});

test('a file replaced by rename is read again and the store takes the new certificate', async () => {
  const store = new CertificateStore();
  let reads = 0;
  const files = source((inputs) => {
    reads += 1;
    store.update(inputs);
  });
  await files.start();
  try {
    assert.equal(store.view().certificates.find((c) => c.name === 'a-api')?.serial.replace(/^0+/, ''), '3EA');
    await writeFile(join(certs, '.next.key'), pem.API_V2_KEY);
    await rename(join(certs, '.next.key'), join(certs, 'a-api.key'));
    await writeFile(join(certs, '.next.crt'), pem.API_V2_CERT);
    await rename(join(certs, '.next.crt'), join(certs, 'a-api.crt'));
    const deadline = Date.now() + 10_000;
    while (store.view().certificates.find((c) => c.name === 'a-api')?.serial.replace(/^0+/, '') !== '3EB') {
      assert.ok(Date.now() < deadline, `still the old certificate after ${reads} reads`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  } finally {
    files.close();
  }
});
