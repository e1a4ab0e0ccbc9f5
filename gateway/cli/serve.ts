import type { Command } from 'commander';
import { formatSize } from '../../shared/units.js';
import { Gateway } from '../gateway.js';
import { createLogger } from '../logger.js';
import { SETTINGS_HELP } from './settings-help.js';
import { addSettingOptions, configFrom } from './options.js';
import type { BoundAddress } from '../nbd/server.js';

/** How a listener is named in the start-up message, and the client URL for a volume on it. */
function describeListener(listener: BoundAddress): {
  where: string;
  tcp: string | undefined;
  url: (scheme: string, volume: string) => string;
} {
  if (listener.kind === 'unix') {
    return {
      where: `unix:${listener.path}`,
      tcp: undefined,
      url: (scheme, volume) => `${scheme}+unix:///${volume}?socket=${listener.path}`,
    };
  }
  const host = listener.host.includes(':') ? `[${listener.host}]` : listener.host;
  const tcp = `${host}:${listener.port}`;
  return {
    where: tcp,
    tcp,
    url: (scheme, volume) => (listener.port === 10809 ? `${scheme}://${host}/${volume}` : `${scheme}://${tcp}/${volume}`),
  };
}

export function registerServe(program: Command): void {
  const serve = program
    .command('serve', { isDefault: true })
    .description('run the gateway: replay journals, serve volumes over NBD, upload to the store');
  addSettingOptions(serve, Object.keys(SETTINGS_HELP) as (keyof typeof SETTINGS_HELP)[]);
  serve.action(async (_opts: unknown, cmd: Command) => {
    const config = configFrom(cmd);
    const logger = createLogger(config.logLevel, config.logFormat);
    const gateway = await Gateway.start(config, logger);
    const [first, ...more] = gateway.listeners.map(describeListener);
    const lines = [`holdfast: serving ${gateway.list().length} volume(s) from ${gateway.store.location} on ${first?.where ?? 'nothing'}`];
    for (const other of more) lines.push(`  also on ${other.where}`);
    const scheme = config.tls === 'off' ? 'nbd' : 'nbds';
    for (const v of gateway.list()) {
      lines.push(`  ${v.name} (${formatSize(v.size)}${v.readOnly ? ', read-only' : ''}):`);
      if (first !== undefined) lines.push(`    nbdinfo ${first.url(scheme, v.name)}`);
      if (first?.tcp !== undefined && config.tls === 'off')
        lines.push(`    qemu-system-x86_64 -drive file=nbd://${first.tcp}/${v.name},format=raw`);
    }
    const admin = gateway.adminAddress;
    if (admin !== undefined)
      lines.push(
        `  admin API: http://${admin.address.includes(':') ? `[${admin.address}]` : admin.address}:${admin.port}  (holdfast status --watch)`,
      );
    process.stdout.write(`${lines.join('\n')}\n`);

    await new Promise<void>((resolve) => {
      let signals = 0;
      const onSignal = (signal: NodeJS.Signals) => {
        signals++;
        if (signals > 1) {
          logger.warn({ signal }, 'second signal: exiting now (acknowledged writes are already in the journal)');
          process.exit(1);
        }
        logger.info({ signal, graceMs: config.shutdownGrace }, 'shutting down: finishing requests in flight, syncing journals');
        const deadline = setTimeout(() => {
          logger.error('shutdown grace period over; exiting with requests unfinished (acknowledged writes are in the journal)');
          process.exit(1);
        }, config.shutdownGrace + 2000);
        deadline.unref();
        gateway.stop().then(resolve, (err: unknown) => {
          logger.error({ err }, 'error during shutdown');
          process.exitCode = 1;
          resolve();
        });
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
      process.on('SIGHUP', () => {
        gateway.reloadSecurity().then(
          () => {
            logger.info('SIGHUP: TLS credentials and access rules reloaded');
          },
          (err: unknown) => {
            logger.error({ err }, 'SIGHUP: reload failed; the previous TLS credentials and access rules stay in use');
          },
        );
      });
    });
    logger.info('stopped');
    logger.flush();
  });
}
