// The Debian packages of the tools that the tests, the bench and `npm run s3:dev` run, and how they
// are installed when missing: one `apt-get update`, then only what is missing, without recommends.
import { spawnSync } from 'node:child_process';

/** Ceph's RADOS Gateway on a one-node cluster (tests/helpers/rgw-server.ts): command → package. */
export const CEPH_TOOLS = {
  'ceph-mon': 'ceph-mon',
  'ceph-osd': 'ceph-osd',
  radosgw: 'radosgw',
  'radosgw-admin': 'ceph-common',
  ceph: 'ceph-common',
  monmaptool: 'ceph-base',
};

export function onPath(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** The packages of the commands in `tools` (command → package) that are not on PATH. */
export function missingPackages(tools) {
  return [
    ...new Set(
      Object.entries(tools)
        .filter(([cmd]) => !onPath(cmd))
        .map(([, pkg]) => pkg),
    ),
  ];
}

/** Installs `packages` with apt-get (root and Debian's mirror needed); false if apt-get failed. */
export function installPackages(packages, log) {
  if (packages.length === 0) return true;
  log(`installing missing Debian packages: ${packages.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const apt = (args) => {
    const r = spawnSync('apt-get', args, { stdio: 'inherit', env });
    return r.error === undefined && r.status === 0;
  };
  return apt(['update', '-qq']) && apt(['install', '-y', '-qq', '--no-install-recommends', ...packages]);
}
