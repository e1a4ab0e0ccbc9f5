/** What the harness reads of a Holdfast volume from the admin API (`GET /v1/volumes/{name}`). */

export interface VolumeProgress {
  readonly heldRequests: number;
  readonly backlogRecords: number;
  readonly dirtyExtents: number;
  readonly uploadBytes: number;
  readonly uploadsInFlight: number;
  /** Heads and index pages written (bytes sent to the store besides the uploads). */
  readonly metadataBytes: number;
  readonly compactedExtents: number;
  readonly deltas: number;
  readonly indexBytes: number;
  /** Room the memory limit takes from the cache now (`cache.squeezed`). */
  readonly cacheSqueezedBytes: number;
}

function field(value: unknown, ...keys: string[]): number {
  let at: unknown = value;
  for (const key of keys) at = typeof at === 'object' && at !== null ? (at as Record<string, unknown>)[key] : undefined;
  if (typeof at !== 'number') throw new Error(`admin API: volume status has no number at ${keys.join('.')}`);
  return at;
}

export async function fetchVolume(adminUrl: string, volume: string): Promise<VolumeProgress> {
  const res = await fetch(`${adminUrl}/v1/volumes/${encodeURIComponent(volume)}`, { signal: AbortSignal.timeout(5_000) });
  if (!res.ok) throw new Error(`GET ${adminUrl}/v1/volumes/${volume} answered ${res.status}`);
  const body: unknown = await res.json();
  return {
    heldRequests: field(body, 'held', 'requests'),
    backlogRecords: field(body, 'journal', 'backlogRecords'),
    dirtyExtents: field(body, 'journal', 'dirtyExtents'),
    uploadBytes: field(body, 'uploads', 'bytes'),
    uploadsInFlight: field(body, 'uploads', 'inFlight'),
    metadataBytes: field(body, 'image', 'metadataBytes'),
    compactedExtents: field(body, 'image', 'compactedExtents'),
    deltas: field(body, 'image', 'deltas'),
    indexBytes: field(body, 'image', 'indexBytes'),
    cacheSqueezedBytes: field(body, 'cache', 'squeezed'),
  };
}

/**
 * The most room the memory limit took from the volume's cache over a measured span (`cache.squeezed`,
 * polled): a row's peak RSS under the limit says little without what the cache gave up for it.
 */
export class SqueezeMeter {
  private peakBytes = 0;
  private readonly timer: NodeJS.Timeout;
  private polling: Promise<void> = Promise.resolve();

  constructor(
    private readonly adminUrl: string,
    private readonly volume: string,
  ) {
    this.timer = setInterval(() => {
      this.polling = this.poll();
    }, SQUEEZE_POLL_MS);
  }

  private async poll(): Promise<void> {
    try {
      this.peakBytes = Math.max(this.peakBytes, (await fetchVolume(this.adminUrl, this.volume)).cacheSqueezedBytes);
    } catch {
      // Restarting or stopping: the span's peak is what was seen while it answered.
    }
  }

  async stop(): Promise<number> {
    clearInterval(this.timer);
    await this.polling;
    return this.peakBytes / 2 ** 20;
  }
}

const SQUEEZE_POLL_MS = 200;

/** As the admin API shows and takes it: `off`, `forever` or a duration like `360s`. */
export type HangTimeoutSetting = string;

/** Sets the volume's hang timeout (`PUT .../hang-policy`) and returns the one it replaced. */
export async function setHangTimeout(adminUrl: string, volume: string, timeout: HangTimeoutSetting): Promise<HangTimeoutSetting> {
  const url = `${adminUrl}/v1/volumes/${encodeURIComponent(volume)}/hang-policy`;
  const before = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  if (!before.ok) throw new Error(`GET ${url} answered ${before.status}`);
  const previous = ((await before.json()) as { timeout?: unknown }).timeout;
  if (typeof previous !== 'string') throw new Error(`GET ${url}: no timeout in the policy`);
  const res = await fetch(url, {
    method: 'PUT',
    body: JSON.stringify({ timeout }),
    headers: { 'content-type': 'application/json' },
    signal: AbortSignal.timeout(5_000),
  });
  if (!res.ok) throw new Error(`PUT ${url} answered ${res.status}: ${await res.text()}`);
  return previous;
}
