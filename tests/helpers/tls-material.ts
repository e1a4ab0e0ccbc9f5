import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { runToolOk } from './run-tool.js';

/**
 * Keys and certificates made with GnuTLS's certtool and psktool (gnutls-bin), laid out the way
 * the clients read them: libnbd's tls-certificates and qemu's tls-creds-x509 take a directory with
 * ca-cert.pem, client-cert.pem and client-key.pem; qemu's tls-creds-psk a directory with keys.psk.
 */
export interface TlsMaterial {
  readonly dir: string;
  readonly caCert: string;
  readonly caKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
  /** psktool file with every PSK identity. */
  readonly pskFile: string;
  /** Directory holding pskFile as keys.psk (qemu's tls-creds-psk dir=). */
  readonly pskDir: string;
  readonly pskKeys: ReadonlyMap<string, Buffer>;
  /** Per client certificate common name: a directory with ca-cert.pem, client-cert.pem, client-key.pem. */
  readonly clientDirs: ReadonlyMap<string, string>;
}

async function certtool(args: readonly string[]): Promise<void> {
  await runToolOk('certtool', args);
}

async function template(dir: string, name: string, lines: readonly string[]): Promise<string> {
  const file = path.join(dir, `${name}.info`);
  await writeFile(file, `${lines.join('\n')}\n`);
  return file;
}

/** A self-signed CA: its certificate and key. */
async function makeCa(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const key = path.join(dir, `${name}-key.pem`);
  const cert = path.join(dir, `${name}-cert.pem`);
  await certtool(['--generate-privkey', '--key-type=ecdsa', '--outfile', key]);
  await certtool([
    '--generate-self-signed',
    '--load-privkey',
    key,
    '--template',
    await template(dir, name, [`cn = ${name}`, 'ca', 'cert_signing_key', 'expiration_days = 2']),
    '--outfile',
    cert,
  ]);
  return { cert, key };
}

async function signed(
  dir: string,
  name: string,
  ca: { cert: string; key: string },
  lines: readonly string[],
): Promise<{ cert: string; key: string }> {
  const key = path.join(dir, `${name}-key.pem`);
  const cert = path.join(dir, `${name}-cert.pem`);
  await certtool(['--generate-privkey', '--key-type=ecdsa', '--outfile', key]);
  await certtool([
    '--generate-certificate',
    '--load-privkey',
    key,
    '--load-ca-certificate',
    ca.cert,
    '--load-ca-privkey',
    ca.key,
    '--template',
    await template(dir, name, lines),
    '--outfile',
    cert,
  ]);
  return { cert, key };
}

/** A client certificate directory as libnbd and qemu read it. */
async function clientDir(dir: string, name: string, ca: { cert: string; key: string }, trust: string): Promise<string> {
  const { cert, key } = await signed(dir, `client-${name}`, ca, [`cn = ${name}`, 'tls_www_client', 'signing_key', 'expiration_days = 2']);
  const out = path.join(dir, `x509-${name}`);
  await mkdir(out, { recursive: true });
  await writeFile(path.join(out, 'ca-cert.pem'), await readFile(trust));
  await writeFile(path.join(out, 'client-cert.pem'), await readFile(cert));
  await writeFile(path.join(out, 'client-key.pem'), await readFile(key));
  return out;
}

/** Writes a psktool file with a fresh key for each identity; returns the keys. */
export async function makePskFile(file: string, identities: readonly string[]): Promise<Map<string, Buffer>> {
  for (const identity of identities) await runToolOk('psktool', ['-u', identity, '-p', file]);
  const keys = new Map<string, Buffer>();
  for (const line of (await readFile(file, 'utf8')).split('\n')) {
    const colon = line.lastIndexOf(':');
    if (colon > 0) keys.set(line.slice(0, colon), Buffer.from(line.slice(colon + 1), 'hex'));
  }
  return keys;
}

/**
 * A CA, a server certificate for localhost and 127.0.0.1, client certificates for `clients`
 * (and `untrusted` ones from a CA the server does not know), and PSK keys for `pskIdentities`.
 */
export async function makeTlsMaterial(
  dir: string,
  options: { clients: readonly string[]; untrusted?: readonly string[]; pskIdentities: readonly string[] },
): Promise<TlsMaterial> {
  await mkdir(dir, { recursive: true });
  const ca = await makeCa(dir, 'holdfast-test-ca');
  const server = await signed(dir, 'server', ca, SERVER_TEMPLATE);
  const clientDirs = new Map<string, string>();
  for (const name of options.clients) clientDirs.set(name, await clientDir(dir, name, ca, ca.cert));
  if ((options.untrusted ?? []).length > 0) {
    const rogue = await makeCa(dir, 'rogue-ca');
    for (const name of options.untrusted ?? []) clientDirs.set(name, await clientDir(dir, name, rogue, ca.cert));
  }
  const pskDir = path.join(dir, 'psk');
  await mkdir(pskDir, { recursive: true });
  const pskFile = path.join(pskDir, 'keys.psk');
  const pskKeys = await makePskFile(pskFile, options.pskIdentities);
  return { dir, caCert: ca.cert, caKey: ca.key, serverCert: server.cert, serverKey: server.key, pskFile, pskDir, pskKeys, clientDirs };
}

const SERVER_TEMPLATE = [
  'cn = localhost',
  'dns_name = localhost',
  'ip_address = 127.0.0.1',
  'tls_www_server',
  'signing_key',
  'expiration_days = 2',
];

/** A new key and certificate for the server, from the same CA, written over the old files (a renewal). */
export async function renewServerCertificate(material: TlsMaterial): Promise<void> {
  const renewed = await signed(material.dir, 'server-renewed', { cert: material.caCert, key: material.caKey }, SERVER_TEMPLATE);
  await writeFile(material.serverKey, await readFile(renewed.key));
  await writeFile(material.serverCert, await readFile(renewed.cert));
}
