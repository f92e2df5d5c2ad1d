import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A self-signed certificate for CN=localhost made with openssl, or null (and a loud warning) without it. */
export function makeCertificate(): { key: Buffer; cert: Buffer } | null {
  const dir = mkdtempSync(join(tmpdir(), 'nestjs-smux-tls-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost',
        '-days',
        '1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
  } catch (error) {
    console.warn(`\n\n!!! TLS end-to-end tests SKIPPED: could not create a certificate with openssl (${(error as Error).message}) !!!\n\n`);
    return null;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A key and the certificate for it (PEM). */
export interface KeyPair {
  key: Buffer;
  cert: Buffer;
}

/** A test certificate authority: its own certificate, and a way to issue leaf certificates signed by it. */
export interface TestCa extends KeyPair {
  /**
   * A leaf certificate for `commonName` signed by this CA (an EC P-256 key), valid for a day.
   * @param options.altNames - subjectAltName entries (default `DNS:localhost` and `IP:127.0.0.1`)
   * @param options.usage - what it may be used for: `server`, `client` or `both` (the default)
   */
  issue(commonName: string, options?: { altNames?: string[]; usage?: 'server' | 'client' | 'both' }): KeyPair;
}

/** Runs `work` in a fresh temporary directory, removed afterwards. */
function inTempDir<T>(work: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'nestjs-smux-ca-'));
  try {
    return work(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const openssl = (...args: string[]): void => void execFileSync('openssl', args, { stdio: 'ignore' });
const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
let serials = 0;

/**
 * A certificate authority made with openssl for one test run (EC P-256 keys, valid for a day), or null (and a
 * loud warning) without openssl. Its leaf certificates serve TLS servers (server auth) and clients (mutual TLS).
 */
export function makeCa(name = 'nestjs-smux test CA'): TestCa | null {
  try {
    const ca = inTempDir((dir) => {
      openssl(
        'req',
        '-x509',
        ...EC_KEY,
        '-subj',
        `/CN=${name}`,
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
        '-days',
        '1',
        '-keyout',
        join(dir, 'ca.key'),
        '-out',
        join(dir, 'ca.pem'),
      );
      return { key: readFileSync(join(dir, 'ca.key')), cert: readFileSync(join(dir, 'ca.pem')) };
    });
    const issue: TestCa['issue'] = (commonName, options = {}) =>
      inTempDir((dir) => {
        const { altNames = ['DNS:localhost', 'IP:127.0.0.1'], usage = 'both' } = options;
        const purposes = { server: 'serverAuth', client: 'clientAuth', both: 'serverAuth,clientAuth' }[usage];
        writeFileSync(join(dir, 'ca.key'), ca.key);
        writeFileSync(join(dir, 'ca.pem'), ca.cert);
        writeFileSync(
          join(dir, 'leaf.ext'),
          [
            'basicConstraints=critical,CA:FALSE',
            'keyUsage=critical,digitalSignature,keyEncipherment',
            `extendedKeyUsage=${purposes}`,
            ...(altNames.length > 0 ? [`subjectAltName=${altNames.join(',')}`] : []),
          ].join('\n'),
        );
        openssl('req', ...EC_KEY, '-subj', `/CN=${commonName}`, '-keyout', join(dir, 'leaf.key'), '-out', join(dir, 'leaf.csr'));
        openssl(
          'x509',
          '-req',
          '-in',
          join(dir, 'leaf.csr'),
          '-CA',
          join(dir, 'ca.pem'),
          '-CAkey',
          join(dir, 'ca.key'),
          '-set_serial',
          String(Date.now() * 1000 + (++serials % 1000)),
          '-days',
          '1',
          '-extfile',
          join(dir, 'leaf.ext'),
          '-out',
          join(dir, 'leaf.pem'),
        );
        return { key: readFileSync(join(dir, 'leaf.key')), cert: readFileSync(join(dir, 'leaf.pem')) };
      });
    issue('probe'); // a missing openssl feature shows here, not in the middle of a test
    return { ...ca, issue };
  } catch (error) {
    console.warn(`\n\n!!! TLS end-to-end tests SKIPPED: could not create a test CA with openssl (${(error as Error).message}) !!!\n\n`);
    return null;
  }
}
