// `npm run s3:dev`: Ceph's RADOS Gateway on a private one-node cluster in the foreground, for
// running the gateway against a real S3 by hand. Installs the Ceph packages when missing, prints
// where it is and the credentials to use, one KEY=value a line, and stops everything it started on
// SIGINT or SIGTERM. Its objects live in memory and are gone when it stops.
import { startRgwServer } from '../tests/helpers/rgw-server.js';
import { CEPH_TOOLS, installPackages, missingPackages } from './debian-tools.mjs';

const log = (line: string): void => void process.stderr.write(`s3:dev: ${line}\n`);

const missing = missingPackages(CEPH_TOOLS);
if (missing.length > 0 && !installPackages(missing, log)) {
  log(`could not install ${missing.join(' ')} (apt-get needs root and Debian's package mirror)`);
  process.exit(1);
}

// The cluster's processes do not keep Node's event loop alive by themselves.
const keepAlive = setInterval(() => undefined, 2 ** 30);
let stopped: NodeJS.Signals | undefined;
let stop = (signal: NodeJS.Signals): void => {
  // A signal during the start: the cluster is stopped as soon as it is there to stop.
  stopped = signal;
};
process.once('SIGINT', (signal) => {
  stop(signal);
});
process.once('SIGTERM', (signal) => {
  stop(signal);
});

const server = await startRgwServer({ bucket: 'holdfast' });
stop = (signal: NodeJS.Signals): void => {
  log(`${signal}: stopping`);
  void server.close().then(
    () => {
      clearInterval(keepAlive);
    },
    (err: unknown) => {
      log(`stopping failed: ${String(err)}`);
      process.exit(1);
    },
  );
};
if (stopped !== undefined) {
  stop(stopped);
} else {
  const lines = [
    `endpoint=${server.endpoint}`,
    `bucket=${server.bucket}`,
    ...Object.entries(server.env).map(([name, value]) => `${name}=${value}`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  log(
    `Ceph RADOS Gateway ready in ${(server.startMs / 1000).toFixed(1)} s: radosgw pid ${server.pid} (kill -STOP it for an outage), data in memory under ${server.dir}; Ctrl-C stops it`,
  );
}
