// Runs s3rver in its own process so that tests can SIGKILL, SIGSTOP and restart it to simulate
// storage outages. Usage: node s3rver-main.mjs <port> <directory> <bucket>...
import S3rver from 's3rver';

const [portArg, directory, ...buckets] = process.argv.slice(2);
if (portArg === undefined || directory === undefined || buckets.length === 0) {
  process.stderr.write('usage: s3rver-main.mjs <port> <directory> <bucket>...\n');
  process.exit(2);
}

// The parent holds our stdin open; EOF means it died without killing us (SIGKILL, crash), and a
// leftover server would keep the port and confuse the next run.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

const server = new S3rver({
  address: '127.0.0.1',
  port: Number(portArg),
  silent: true,
  directory,
  resetOnClose: false,
  configureBuckets: buckets.map((name) => ({ name })),
});
const { port } = await server.run();
process.stdout.write(`READY ${port}\n`);
