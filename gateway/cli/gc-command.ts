import type { Command } from 'commander';
import { formatSize } from '../../shared/units.js';
import { collectGarbage } from '../image/gc.js';
import { addSettingOptions } from './options.js';
import { startProgress } from './progress.js';
import { withSession } from './session.js';
import { STORE_SETTINGS } from './settings-help.js';

export function registerGcCommand(program: Command): void {
  addSettingOptions(
    program
      .command('gc')
      .description('delete the objects no volume, snapshot or clone refers to any more')
      .option('--dry-run', 'only report what would be deleted')
      .addHelpText(
        'after',
        '\nObjects younger than --gc-grace (default 1h) are kept, and so are objects a volume stopped using less than\nthat ago: a reader that started before may still need them. Gateways run this every --gc-interval.',
      ),
    [...STORE_SETTINGS, 'gcGrace'],
  ).action(async (opts: { dryRun?: boolean }, cmd: Command) => {
    await withSession(cmd, async (session) => {
      let progress: ReturnType<typeof startProgress> | undefined;
      let last = 0;
      const report = await collectGarbage(session.store, {
        graceMs: session.config.gcGrace,
        dryRun: opts.dryRun === true,
        logger: session.logger,
        onDelete: (done, of) => {
          progress ??= startProgress('gc', of);
          progress.advance(done - last);
          last = done;
        },
      });
      progress?.stop();
      const verb = report.dryRun ? 'would delete' : 'deleted';
      process.stdout.write(
        `${report.objects} objects (${formatSize(report.bytes)}): ${report.referencedObjects} in use (${formatSize(report.referencedBytes)}), ` +
          `${report.youngObjects} unused but younger than the grace period, ${verb} ${report.deletedObjects} (${formatSize(report.deletedBytes)})` +
          `${report.trashDeleted > 0 ? `; ${report.trashDeleted} expired trash entries removed` : ''}\n`,
      );
    });
  });
}
