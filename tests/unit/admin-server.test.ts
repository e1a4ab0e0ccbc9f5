import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { HoldfastEvent } from '../../shared/events.js';
import { DEFAULT_HANG_POLICY, HangPolicyDocumentSchema } from '../../shared/hang-policy.js';
import { AdminServer } from '../../gateway/admin/admin-server.js';
import { GatewayMetrics } from '../../gateway/admin/metrics.js';
import { VolumeStatusSchema, VolumesResponseSchema, type VolumeStatus } from '../../gateway/admin/volume-status.js';
import { HangMonitor } from '../../gateway/hang/index.js';
import { FakeClock } from '../helpers/fake-clock.js';

/** The admin API in-process: its routes, refusals and who-asked records, without a gateway binary. */

const TOKEN = 'admin-token-for-tests';
const TOKEN_ID = `sha256:${createHash('sha256').update(TOKEN).digest('hex').slice(0, 12)}`;

class Rig {
  readonly events: HoldfastEvent[] = [];
  readonly logs: Record<string, unknown>[] = [];
  healthy = true;
  readonly monitor: HangMonitor;
  readonly server: AdminServer;
  base = '';

  constructor() {
    const logger = pino(
      { level: 'info' },
      new Writable({
        write: (chunk: Buffer, _enc, done) => {
          this.logs.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>);
          done();
        },
      }),
    );
    this.monitor = new HangMonitor({
      volume: 'v1',
      gateway: 'gw-test',
      policy: DEFAULT_HANG_POLICY,
      probe: async () => undefined,
      journal: { held: () => ({ requests: 0, bytes: 0 }), failWaiters: () => undefined, usage: () => ({ bytes: 0, limit: 100 }) },
      events: { publish: (e) => this.events.push(e), close: async () => undefined },
      logger,
      clock: new FakeClock(),
      idPrefix: 'test',
    });
    const status = (name: string): VolumeStatus | undefined => {
      if (name !== 'v1') return undefined;
      const { journalPressure, ...hang } = this.monitor.snapshot();
      return {
        name,
        size: 1 << 20,
        readOnly: false,
        clients: 0,
        ...hang,
        journal: { bytes: 0, limit: 100, pressure: journalPressure, backlogRecords: 0, dirtyExtents: 0 },
        cache: { bytes: 0, hits: 0, misses: 0, squeezed: 0 },
        diskCache: null,
        uploads: { done: 0, bytes: 0, failures: 0, inFlight: 0 },
        image: {
          epoch: 1,
          headSeq: 0,
          ackedSeq: 0,
          leaseRemainingMs: 30_000,
          deltas: 0,
          deltaBytes: 0,
          baseExtents: 0,
          indexBytes: 0,
          compactedExtents: 0,
          compactionWaits: 0,
          compactionBytes: 0,
          metadataBytes: 0,
          corruptReads: 0,
        },
      };
    };
    this.server = new AdminServer({
      sources: {
        volumeNames: () => ['v1'],
        status,
        hangControl: (name) => (name === 'v1' ? this.monitor : undefined),
        healthy: () => this.healthy,
        events: (volume) => this.events.filter((e) => volume === undefined || e.volume === volume),
        gatewayId: 'gw-test',
      },
      metrics: new GatewayMetrics({ volumes: () => [], nbd: () => undefined }),
      logger,
      token: TOKEN,
    });
  }

  async start(): Promise<void> {
    const address = await this.server.listen('127.0.0.1', 0);
    this.base = `http://127.0.0.1:${address.port}`;
  }

  async call(
    method: string,
    path: string,
    opts: { body?: string; token?: string | null } = {},
  ): Promise<{ status: number; json: unknown; text: string }> {
    const token = opts.token === undefined ? TOKEN : opts.token;
    const res = await fetch(`${this.base}${path}`, {
      method,
      body: opts.body ?? null,
      headers: token === null ? {} : { authorization: `Bearer ${token}` },
    });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text };
  }
}

describe('admin server', () => {
  const rig = new Rig();
  before(() => rig.start());
  after(async () => {
    rig.monitor.close();
    await rig.server.close();
  });

  it('answers health without a token, and 503 once the gateway cannot serve', async () => {
    assert.deepEqual((await rig.call('GET', '/healthz', { token: null })).json, { status: 'ok', gateway: 'gw-test', volumes: 1 });
    rig.healthy = false;
    assert.equal((await rig.call('GET', '/healthz', { token: null })).status, 503);
    rig.healthy = true;
  });

  it('needs the bearer token everywhere else', async () => {
    for (const token of [null, 'wrong-token-of-other-length', TOKEN.replace('a', 'b')]) {
      const r = await rig.call('GET', '/v1/volumes', { token });
      assert.equal(r.status, 401, `token ${token}`);
      assert.deepEqual(r.json, { error: 'missing or wrong bearer token' });
    }
    assert.equal((await rig.call('GET', '/metrics')).status, 200);
  });

  it('lists volumes and one volume in the shape the CLI parses', async () => {
    const list = VolumesResponseSchema.parse((await rig.call('GET', '/v1/volumes')).json);
    assert.deepEqual(
      list.volumes.map((v) => v.name),
      ['v1'],
    );
    const one = VolumeStatusSchema.parse((await rig.call('GET', '/v1/volumes/v1')).json);
    assert.equal(one.state, 'normal');
    assert.equal(one.policy.timeout, '120s');
  });

  it('refuses bad requests with a status and a message naming what is wrong', async () => {
    const cases: [string, string, string | undefined, number, RegExp][] = [
      ['GET', '/v1/volumes/nope', undefined, 404, /no volume named nope/],
      ['GET', '/v2/anything', undefined, 404, /no such endpoint/],
      ['GET', '/v1/volumes/%E0%A4%A', undefined, 400, /not valid percent-encoding/],
      ['PATCH', '/v1/volumes/v1', undefined, 405, /use GET/],
      ['POST', '/v1/volumes/v1/hang-policy', undefined, 405, /use GET or PUT/],
      ['GET', '/v1/volumes/v1/pause', undefined, 405, /use POST/],
      ['PUT', '/v1/volumes/v1/hang-policy', '{"timeout":', 400, /not valid JSON/],
      ['PUT', '/v1/volumes/v1/hang-policy', '{"timeout":"soon"}', 400, /invalid hang policy for v1: timeout: "soon" is not a hang timeout/],
      ['PUT', '/v1/volumes/v1/hang-policy', '{"timeout":30000}', 400, /timeout: /],
      ['PUT', '/v1/volumes/v1/hang-policy', JSON.stringify({ pad: 'x'.repeat(70_000) }), 413, /body over 65536 bytes/],
    ];
    for (const [method, path, body, status, message] of cases) {
      const r = await rig.call(method, path, body === undefined ? {} : { body });
      assert.equal(r.status, status, `${method} ${path}: ${r.text}`);
      assert.match((r.json as { error: string }).error, message);
    }
  });

  it('the policy GET returns can be PUT back unchanged; durations stay strings', async () => {
    const got = (await rig.call('GET', '/v1/volumes/v1/hang-policy')).json;
    HangPolicyDocumentSchema.parse(got);
    const put = await rig.call('PUT', '/v1/volumes/v1/hang-policy', { body: JSON.stringify(got) });
    assert.equal(put.status, 200, put.text);
    assert.deepEqual(put.json, got);
    const forever = await rig.call('PUT', '/v1/volumes/v1/hang-policy', { body: '{"timeout":"forever","classes":{"denied":"hold"}}' });
    assert.deepEqual(forever.json, { ...(got as object), timeout: 'forever', classes: { ...DEFAULT_HANG_POLICY.classes, denied: 'hold' } });
    const back = await rig.call('PUT', '/v1/volumes/v1/hang-policy', { body: '{"timeout":"30s","classes":{"denied":"fail"}}' });
    assert.equal((back.json as { timeout: unknown }).timeout, '30s');
    const changed = rig.logs.filter((l) => l.msg === 'hang policy changed');
    assert.equal(changed.length, 3);
    assert.deepEqual((changed[1]!.requestedBy as { token: string }).token, TOKEN_ID);
  });

  it('pause, resume and release answer, log and send an event naming who asked', async () => {
    assert.deepEqual((await rig.call('POST', '/v1/volumes/v1/pause')).json, { paused: true, failed: 0 });
    assert.equal(rig.monitor.paused, true);
    assert.deepEqual((await rig.call('POST', '/v1/volumes/v1/resume')).json, { paused: false });
    assert.deepEqual((await rig.call('POST', '/v1/volumes/v1/release')).json, { failed: 0 });
    const operator = rig.events.filter((e) => e.kind === 'volume-paused' || e.kind === 'volume-resumed' || e.kind === 'held-released');
    assert.deepEqual(
      operator.map((e) => e.kind),
      ['volume-paused', 'volume-resumed', 'held-released'],
    );
    for (const e of operator) {
      assert.ok('requestedBy' in e);
      assert.match(e.requestedBy.address, /^127\.0\.0\.1:\d+$/);
      assert.equal(e.requestedBy.token, TOKEN_ID);
    }
    const lines = rig.logs.filter((l) => typeof l.msg === 'string' && /paused by|resumed by|released by/.test(l.msg));
    assert.equal(lines.length, 3);
    for (const l of lines) assert.equal((l.requestedBy as { token: string }).token, TOKEN_ID);
    assert.ok(!JSON.stringify(rig.logs).includes(TOKEN), 'the token itself is never logged');
    const history = (await rig.call('GET', '/v1/events?volume=v1')).json as { events: HoldfastEvent[] };
    assert.ok(history.events.some((e) => e.kind === 'volume-paused'));
  });
});
