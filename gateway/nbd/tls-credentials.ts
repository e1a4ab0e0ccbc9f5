import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { DEFAULT_CIPHERS, Server as TlsServer, type TLSSocket, type TlsOptions } from 'node:tls';
import { ConfigError, HoldfastError, errorMessage } from '../../shared/errors.js';
import type { TlsPeer } from './handshake.js';
import { describeSource, looksLikePem, looksLikePskKeys, readMaterial } from './material-source.js';
import { parsePskFile } from './psk-file.js';

/** Where the gateway's TLS material lives (a path, or the content itself); every file is read again on reload(). */
export interface TlsFiles {
  /** Server certificate chain (PEM), with `key`. */
  readonly cert?: string | undefined;
  /** Private key (PEM) of `cert`. */
  readonly key?: string | undefined;
  /** CA certificates (PEM): when set, clients without PSK must present a certificate it signed. */
  readonly ca?: string | undefined;
  /** psktool key file: PSK identities and their keys. */
  readonly psk?: string | undefined;
}

/** The TLS handshake after STARTTLS failed; the connection cannot go on. */
export class TlsHandshakeError extends HoldfastError {}

/**
 * Cipher order when PSK keys are configured. TLS 1.3 suites hashing with SHA-256 come first and the
 * server's order wins: a PSK given to OpenSSL through Node's pskCallback is bound to SHA-256, and a
 * SHA-384 suite chosen for the handshake would quietly skip the PSK and demand a certificate. Then
 * the TLS 1.2 suites with pre-shared keys and forward secrecy, for clients without TLS 1.3 (Node's
 * default list excludes every PSK suite; kPSK, without forward secrecy, stays excluded).
 */
const PSK_CIPHERS = [
  'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384',
  'ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256:DHE-PSK-AES256-GCM-SHA384:DHE-PSK-AES128-GCM-SHA256',
  DEFAULT_CIPHERS.split(':')
    .filter((suite) => !suite.startsWith('TLS_'))
    .join(':')
    .replace(':!PSK', ':!kPSK'),
].join(':');

interface Material {
  readonly options: TlsOptions;
  readonly pskKeys: ReadonlyMap<string, Buffer> | undefined;
  readonly verifyClients: boolean;
}

function readPem(value: string, what: string): Promise<Buffer> {
  return readMaterial(value, `TLS ${what}`, looksLikePem);
}

async function loadMaterial(files: TlsFiles): Promise<Material> {
  if ((files.cert === undefined) !== (files.key === undefined)) {
    throw new ConfigError('a TLS certificate needs its key and a key its certificate (--tls-cert with --tls-key)');
  }
  if (files.cert === undefined && files.psk === undefined) {
    throw new ConfigError('TLS needs a certificate and key (--tls-cert, --tls-key) or a PSK file (--tls-psk)');
  }
  const options: { -readonly [K in keyof TlsOptions]: TlsOptions[K] } = {};
  if (files.cert !== undefined && files.key !== undefined) {
    options.cert = await readPem(files.cert, 'certificate');
    options.key = await readPem(files.key, 'key');
  }
  if (files.ca !== undefined) {
    options.ca = await readPem(files.ca, 'CA certificate');
    options.requestCert = true;
  }
  let pskKeys: Map<string, Buffer> | undefined;
  if (files.psk !== undefined) {
    pskKeys = parsePskFile(
      (await readMaterial(files.psk, 'TLS PSK file', looksLikePskKeys)).toString('utf8'),
      describeSource(files.psk, looksLikePskKeys),
    );
    options.ciphers = PSK_CIPHERS;
    options.honorCipherOrder = true;
  }
  // Verification is decided per connection: a PSK client has no certificate to present.
  options.rejectUnauthorized = false;
  // Builds the context once, so that a bad certificate or key is reported now rather than per client.
  try {
    new TlsServer(options);
  } catch (cause) {
    throw new ConfigError(`TLS certificate, key or CA is not usable: ${errorMessage(cause)}`, { cause });
  }
  return { options, pskKeys, verifyClients: files.ca !== undefined };
}

/** One TLS server context, lent to one handshake at a time so that its events belong to that handshake. */
interface Handshaker {
  readonly server: TlsServer;
  /** The PSK identity whose key the handshake in progress used, if any. */
  readonly state: { pskIdentity: string | undefined };
}

/**
 * The gateway's TLS credentials (certificate and key, client CA, PSK keys) and the server side of
 * STARTTLS. reload() reads every file again; connections already upgraded keep their session, the
 * next handshake uses the new material.
 */
export class TlsCredentials {
  private idle: Handshaker[] = [];

  private constructor(
    private readonly files: TlsFiles,
    private material: Material,
  ) {}

  static async load(files: TlsFiles): Promise<TlsCredentials> {
    return new TlsCredentials(files, await loadMaterial(files));
  }

  /** Rereads every file; on failure the credentials in use stay and the error says why. */
  async reload(): Promise<void> {
    this.material = await loadMaterial(this.files);
    this.idle = [];
  }

  /**
   * Runs the server side of a TLS handshake on `socket`, which the caller stops using. Resolves
   * with the encrypted socket and who the client proved to be; rejects with TlsHandshakeError (and
   * destroys the socket) when the handshake fails or the socket closes first.
   */
  upgrade(socket: Socket): Promise<{ readonly socket: TLSSocket; readonly peer: TlsPeer }> {
    const material = this.material;
    const handshaker = this.idle.pop() ?? this.newHandshaker(material);
    handshaker.state.pskIdentity = undefined;
    const { server } = handshaker;
    return new Promise((resolve, reject) => {
      const finish = (): void => {
        server.off('secureConnection', onSecure);
        server.off('tlsClientError', onError);
        socket.off('close', onClose);
        // A handshaker from before a reload is dropped rather than reused.
        if (this.material === material) this.idle.push(handshaker);
      };
      const onSecure = (tlsSocket: TLSSocket): void => {
        finish();
        const pskIdentity = handshaker.state.pskIdentity;
        if (pskIdentity !== undefined) {
          resolve({ socket: tlsSocket, peer: { identity: pskIdentity, method: 'psk' } });
          return;
        }
        if (material.verifyClients && !tlsSocket.authorized) {
          tlsSocket.destroy();
          reject(new TlsHandshakeError(`client certificate refused: ${String(tlsSocket.authorizationError)}`));
          return;
        }
        // Verified above, so the certificate is there.
        const commonName = material.verifyClients ? tlsSocket.getPeerCertificate().subject.CN : undefined;
        resolve({ socket: tlsSocket, peer: { identity: typeof commonName === 'string' ? commonName : undefined, method: 'x509' } });
      };
      const onError = (err: Error, tlsSocket: TLSSocket): void => {
        finish();
        tlsSocket.destroy();
        reject(new TlsHandshakeError(`TLS handshake failed (${err.message})`, { cause: err }));
      };
      const onClose = (): void => {
        finish();
        reject(new TlsHandshakeError('connection closed during the TLS handshake'));
      };
      server.on('secureConnection', onSecure);
      server.on('tlsClientError', onError);
      socket.once('close', onClose);
      server.emit('connection', socket);
    });
  }

  private newHandshaker(material: Material): Handshaker {
    const keys = material.pskKeys;
    const state: Handshaker['state'] = { pskIdentity: undefined };
    const options: TlsOptions =
      keys === undefined
        ? material.options
        : {
            ...material.options,
            pskCallback: (_socket, identity) => {
              const key = keys.get(identity);
              // A random key fails the handshake like a wrong one, so unknown identities look like known ones.
              if (key === undefined) return randomBytes(32);
              state.pskIdentity = identity;
              return key;
            },
          };
    return { server: new TlsServer(options), state };
  }
}
