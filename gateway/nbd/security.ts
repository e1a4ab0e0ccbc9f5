import { ConfigError } from '../../shared/errors.js';
import { IdentityAccess, OPEN_ACCESS, type AccessPolicy } from './access.js';
import type { TlsMode } from './handshake.js';
import { describeSource, looksLikeJson, readMaterial } from './material-source.js';
import { TlsCredentials, type TlsFiles } from './tls-credentials.js';

/** How the server secures negotiation: TLS mode, its credentials, and who may open what. */
export interface NbdSecurity {
  readonly tls: () => TlsMode;
  /** Undefined when TLS is off. */
  readonly credentials: () => TlsCredentials | undefined;
  readonly access: () => AccessPolicy;
}

/** No TLS; every client opens every export. */
export const PLAIN_SECURITY: NbdSecurity = {
  tls: () => 'off',
  credentials: () => undefined,
  access: () => OPEN_ACCESS,
};

export interface SecuritySettings {
  readonly tls: TlsMode;
  readonly files: TlsFiles;
  /** JSON file (or JSON itself) of identities and the volumes each may open (see IdentityAccess). */
  readonly accessFile?: string | undefined;
}

async function loadAccess(source: string | undefined): Promise<AccessPolicy> {
  if (source === undefined) return OPEN_ACCESS;
  const text = (await readMaterial(source, 'access file', looksLikeJson)).toString('utf8');
  return IdentityAccess.parse(text, describeSource(source, looksLikeJson));
}

/**
 * Security settings read from files, reloadable (SIGHUP) without touching open connections: the
 * next TLS handshake uses the new keys and certificates, the next option the new access rules.
 */
export class FileSecurity implements NbdSecurity {
  private constructor(
    private readonly settings: SecuritySettings,
    private tlsCredentials: TlsCredentials | undefined,
    private accessPolicy: AccessPolicy,
  ) {}

  static async load(settings: SecuritySettings): Promise<FileSecurity> {
    if (settings.tls === 'off' && settings.accessFile !== undefined) {
      throw new ConfigError('an access file needs TLS (--tls on or require): identities come from TLS');
    }
    const credentials = settings.tls === 'off' ? undefined : await TlsCredentials.load(settings.files);
    return new FileSecurity(settings, credentials, await loadAccess(settings.accessFile));
  }

  readonly tls = (): TlsMode => this.settings.tls;
  readonly credentials = (): TlsCredentials | undefined => this.tlsCredentials;
  readonly access = (): AccessPolicy => this.accessPolicy;

  /** Rereads every file; if one is bad, nothing changes and the error says which. */
  async reload(): Promise<void> {
    const access = await loadAccess(this.settings.accessFile);
    if (this.tlsCredentials !== undefined) await this.tlsCredentials.reload();
    this.accessPolicy = access;
  }
}
