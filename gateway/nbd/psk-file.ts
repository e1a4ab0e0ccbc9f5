import { ConfigError } from '../../shared/errors.js';

/** Shorter keys are refused: psktool makes 32-byte keys, and 16 bytes is the least TLS-PSK should get. */
const MIN_KEY_BYTES = 16;
const HEX = /^(?:[0-9a-fA-F]{2})+$/;

/**
 * Parses a PSK key file in psktool's format, the one qemu (`tls-creds-psk`, `keys.psk`) and nbdkit
 * (`--tls-psk`) read: one `IDENTITY:HEXKEY` per line. Returns the keys by identity.
 */
export function parsePskFile(text: string, path: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  const lines = text.split(/\r?\n/);
  for (const [index, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '') continue;
    const where = `${path} line ${index + 1}`;
    const colon = line.lastIndexOf(':');
    if (colon <= 0) throw new ConfigError(`${where}: expected IDENTITY:HEXKEY (as psktool writes it)`);
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (!HEX.test(hex)) throw new ConfigError(`${where}: the key of ${JSON.stringify(identity)} is not hexadecimal bytes`);
    if (hex.length / 2 < MIN_KEY_BYTES)
      throw new ConfigError(
        `${where}: the key of ${JSON.stringify(identity)} has ${hex.length / 2} bytes, at least ${MIN_KEY_BYTES} are needed`,
      );
    if (keys.has(identity)) throw new ConfigError(`${where}: identity ${JSON.stringify(identity)} appears twice`);
    keys.set(identity, Buffer.from(hex, 'hex'));
  }
  if (keys.size === 0) throw new ConfigError(`${path} holds no keys`);
  return keys;
}
