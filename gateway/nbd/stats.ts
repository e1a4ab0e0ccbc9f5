import type { CommandName } from './constants.js';
import type { PayloadCounters } from './codec.js';
import { ProtocolErrorReason } from './errors.js';

function zeroed<K extends string>(keys: readonly K[]): Record<K, number> {
  const record = {} as Record<K, number>;
  for (const key of keys) record[key] = 0;
  return record;
}

const COMMAND_NAMES: readonly CommandName[] = ['read', 'write', 'disc', 'flush', 'trim', 'writeZeroes', 'cache', 'blockStatus', 'other'];

/**
 * Plain counters of one NbdServer, mutated in place on the hot path; a metrics layer reads them
 * whenever it likes. Cumulative unless named "active" or "inFlight".
 */
export class NbdStats implements PayloadCounters {
  connectionsAccepted = 0;
  connectionsActive = 0;
  /** Refused because maxConnections were open. */
  connectionsRejected = 0;
  /** Refused because their peer address had maxConnectionsPerPeer open. */
  connectionsRejectedPerPeer = 0;
  /** Closed after the idle timeout with nothing in flight. */
  idleTimeouts = 0;
  /** Connections that completed STARTTLS. */
  tlsSessions = 0;
  /** Connections that reached the transmission phase. */
  transmissionsStarted = 0;
  /** Requests received, by command (including refused ones). */
  readonly requests: Record<CommandName, number> = zeroed(COMMAND_NAMES);
  /** Replies carrying a non-zero error. */
  errorReplies = 0;
  /** Requests handed to an export and not yet answered, over all connections. */
  requestsInFlight = 0;
  bytesRead = 0;
  bytesWritten = 0;
  payloadBytesAssembled = 0;
  payloadBytesSkipped = 0;
  /** Told each request's latency (parsed → replied) when a metrics layer wants it. */
  observeLatency: ((volume: string, command: CommandName, seconds: number) => void) | undefined = undefined;
  /** Connections closed for malformed input, by reason. */
  readonly protocolErrors: Record<ProtocolErrorReason, number> = zeroed(Object.values(ProtocolErrorReason));
}
