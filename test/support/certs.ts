import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';

/** PEM files made at test time in `dir`. */
export interface TestCertificates {
  /** The CA that signed the server certificate. */
  ca: string;
  /** A server certificate for 127.0.0.1 and localhost, and its key. */
  cert: string;
  key: string;
  /** A CA that signed nothing we use: the wrong trust anchor. */
  otherCa: string;
}

/**
 * A CA, a server certificate it signs, and an unrelated CA, made with openssl. Throws when
 * openssl cannot make them (the caller skips its TLS tests then).
 */
export function makeCertificates(dir: string): TestCertificates {
  const f = (name: string) => path.join(dir, name);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl(
    'req',
    '-x509',
    ...ec,
    '-keyout',
    f('ca-key.pem'),
    '-out',
    f('ca.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=pairlock test CA',
  );
  ssl(
    'req',
    ...ec,
    '-keyout',
    f('server-key.pem'),
    '-out',
    f('server.csr'),
    '-subj',
    '/CN=localhost',
  );
  writeFileSync(
    f('ext.cnf'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n',
  );
  ssl(
    'x509',
    '-req',
    '-in',
    f('server.csr'),
    '-CA',
    f('ca.pem'),
    '-CAkey',
    f('ca-key.pem'),
    '-CAcreateserial',
    '-out',
    f('server.pem'),
    '-days',
    '2',
    '-extfile',
    f('ext.cnf'),
  );
  ssl(
    'req',
    '-x509',
    ...ec,
    '-keyout',
    f('other-key.pem'),
    '-out',
    f('other.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=someone else',
  );
  return {
    ca: f('ca.pem'),
    cert: f('server.pem'),
    key: f('server-key.pem'),
    otherCa: f('other.pem'),
  };
}

/** redis-server arguments for a TLS port served with `certs` (clients not asked for a certificate). */
export function tlsServerArgs(certs: TestCertificates, port: number): string[] {
  return [
    '--tls-port',
    String(port),
    '--tls-cert-file',
    certs.cert,
    '--tls-key-file',
    certs.key,
    '--tls-ca-cert-file',
    certs.ca,
    '--tls-auth-clients',
    'no',
  ];
}
