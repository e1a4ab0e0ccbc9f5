import { hostname } from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import type { Command } from 'commander';
import type { Logger } from 'pino';
import { HoldfastError, InvalidArgumentError, VolumeBusyError, errorMessage } from '../../shared/errors.js';
import { VOLUME_NAME } from '../../shared/volume-manifest.js';
import type { ResolvedConfig } from '../config/load-config.js';
import { volumeOptions } from '../config/volume-options.js';
import type { Head, Owner } from '../image/head.js';
import { ownerIdentity } from '../image/take-volume.js';
import { createLogger } from '../logger.js';
import type { ObjectStore } from '../store/object-store.js';
import { openStore } from '../store/open-store.js';
import { retryingStore } from '../store/retrying-store.js';
import { VolumeCatalog } from '../volume/catalog.js';
import { journalIdentity } from '../volume/journal-identity.js';
import { openVolume } from '../volume/open-volume.js';
import type { Volume } from '../volume/volume.js';
import { configFrom } from './options.js';

/** The operation was stopped by SIGINT or SIGTERM; whatever was written so far stays written. */
export class InterruptedError extends HoldfastError {}

/** The gateway that serves the volume refused a request made on the operator's behalf. */
export class OwnerRefusedError extends HoldfastError {}

/** What a command works with: its settings, the store, a logger, and the signal that says the user interrupted it. */
export interface Session {
  readonly config: ResolvedConfig;
  readonly store: ObjectStore;
  readonly logger: Logger;
  readonly signal: AbortSignal;
}

export async function withSession<T>(cmd: Command, fn: (session: Session) => Promise<T>): Promise<T> {
  const config = configFrom(cmd);
  const logger = createLogger(config.logLevel, config.logFormat);
  // A command has no hang engine holding its requests: a store briefly slow to answer is tried again.
  const store = retryingStore(openStore(config), { attempts: 6, initialMs: 200, maxMs: 5000, logger });
  const interrupt = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    // A second signal means the user will not wait for the requests in flight and the volume's release.
    if (interrupt.signal.aborted) process.exit(130);
    interrupt.abort(new InterruptedError(`interrupted by ${signal}; the volume was handed back`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await fn({ config, store, logger, signal: interrupt.signal });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await store.close();
    logger.flush();
  }
}

/**
 * Runs `fn` holding the volume the way a gateway holds it — taken (a gateway serving it refuses), its
 * journal backlog in this journal directory replayed and uploaded first — and hands it back after.
 */
export async function withTakenVolume<T>(session: Session, name: string, fn: (volume: Volume) => Promise<T>): Promise<T> {
  const { config, store, logger } = session;
  const head = await new VolumeCatalog(store).get(name);
  const owner = await cliOwner(session);
  const volume = await openVolume(
    volumeOptions(config, name, head.size, store, owner, logger.child({ command: true }), { gatewayId: owner.gateway }),
  );
  try {
    const backlog = volume.stats().pendingEntries;
    if (backlog > 0) {
      process.stderr.write(`volume ${name}: uploading ${backlog} journal record(s) left by a gateway first\n`);
      await untilAborted(volume.drain(), session.signal);
    }
    return await fn(volume);
  } finally {
    await volume.close({ release: true });
  }
}

/** Who a command that takes a volume is, in the head: its journal directory's, on this host, this process. */
export async function cliOwner(session: Session): Promise<Owner> {
  return ownerIdentity(`cli@${hostname()}`, await journalIdentity(session.config.journalRoot), null);
}

/**
 * Sends a request to the gateway that owns the volume (its admin address is in the head). Undefined
 * when nobody owns it or the owner does not answer: the caller then takes the volume itself, which
 * waits out or refuses a live owner as a gateway would.
 */
export async function askOwner(
  session: Session,
  head: Head,
  path: string,
  method: 'GET' | 'POST' | 'DELETE',
  body?: unknown,
): Promise<unknown> {
  // A gateway that has just taken the volume answers 404 until it has opened it (a second or so).
  for (let attempt = 1; ; attempt++) {
    const answer = await askOwnerOnce(session, head, path, method, body);
    if (answer !== OPENING || attempt >= OPENING_ATTEMPTS) return answer === OPENING ? undefined : answer;
    await delay(OPENING_RETRY_MS, undefined, { signal: session.signal });
  }
}

const OPENING: unique symbol = Symbol('not served yet');
const OPENING_ATTEMPTS = 20;
const OPENING_RETRY_MS = 250;

async function askOwnerOnce(
  session: Session,
  head: Head,
  path: string,
  method: 'GET' | 'POST' | 'DELETE',
  body?: unknown,
): Promise<unknown> {
  const admin = head.owner?.admin;
  if (admin === null || admin === undefined) return undefined;
  let res: Response;
  try {
    res = await fetch(`http://${admin}${path}`, {
      method,
      headers: {
        'content-type': 'application/json',
        ...(session.config.adminToken !== undefined ? { authorization: `Bearer ${session.config.adminToken}` } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.any([session.signal, AbortSignal.timeout(300_000)]),
    });
  } catch (err) {
    session.logger.debug({ err: errorMessage(err), admin }, 'the owner of the volume does not answer; taking the volume');
    return undefined;
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = { error: text };
  }
  if (res.status === 404 && /is served here/.test(text)) return OPENING;
  // Clients are attached and the change would pull the volume from under them.
  if (res.status === 423) throw new VolumeBusyError((json as { error?: string }).error ?? text);
  if (!res.ok)
    throw new OwnerRefusedError(
      `gateway ${head.owner?.gateway} (${admin}) answered ${res.status}: ${(json as { error?: string }).error ?? text}`,
    );
  return json;
}

export function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      // The abort reason is whatever the aborter chose (an Error everywhere in Holdfast); passed on as is.
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- AbortSignal.reason is typed any
      reject(signal.reason);
    };
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => {
      signal.removeEventListener('abort', onAbort);
    });
  });
}

export function checkVolumeName(name: string): void {
  if (!VOLUME_NAME.test(name)) throw new InvalidArgumentError(`"${name}" is not a valid volume name (letters, digits, . _ -; at most 63)`);
}

/** `VOLUME` or `VOLUME@SNAPSHOT`. */
export function parseVolumeRef(text: string): { volume: string; snapshot: string | undefined } {
  const at = text.indexOf('@');
  const volume = at < 0 ? text : text.slice(0, at);
  const snapshot = at < 0 ? undefined : text.slice(at + 1);
  checkVolumeName(volume);
  if (snapshot !== undefined && !VOLUME_NAME.test(snapshot)) throw new InvalidArgumentError(`"${snapshot}" is not a valid snapshot name`);
  return { volume, snapshot };
}
