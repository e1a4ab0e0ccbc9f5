import type { Command } from 'commander';
import { formatSize } from '../../shared/units.js';
import { Gateway } from '../gateway.js';
import { createLogger } from '../logger.js';
import { SETTINGS_HELP } from './settings-help.js';
import { addSettingOptions, configFrom } from './options.js';

export function registerServe(program: Command): void {
  const serve = program
    .command('serve', { isDefault: true })
    .description('run the gateway: replay journals, serve volumes over NBD, upload to the store');
  addSettingOptions(serve, Object.keys(SETTINGS_HELP) as (keyof typeof SETTINGS_HELP)[]);
  serve.action(async (_opts: unknown, cmd: Command) => {
    const config = configFrom(cmd);
    const logger = createLogger(config.logLevel, config.logFormat);
    const gateway = await Gateway.start(config, logger);
    const { address, port } = gateway.address!;
    const host = address.includes(':') ? `[${address}]` : address;
    const lines = [`holdfast: serving ${gateway.list().length} volume(s) from ${gateway.store.location} on ${host}:${port}`];
    for (const v of gateway.list()) {
      const shortUrl = port === 10809 ? `nbd://${host}/${v.name}` : `nbd://${host}:${port}/${v.name}`;
      lines.push(
        `  ${v.name} (${formatSize(v.size)}${v.readOnly ? ', read-only' : ''}):`,
        `    nbdinfo ${shortUrl}`,
        `    qemu-system-x86_64 -drive file=nbd://${host}:${port}/${v.name},format=raw`,
      );
    }
    const admin = gateway.adminAddress;
    if (admin !== undefined) lines.push(`  admin API: http://${admin.address.includes(':') ? `[${admin.address}]` : admin.address}:${admin.port}  (holdfast status --watch)`);
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
    });
    logger.info('stopped');
    logger.flush();
  });
}
