// Runs s3rver in its own process so that it can be SIGKILLed, frozen and restarted like the other S3
// server (tests/helpers/s3rver-server.ts; the bench's --s3-server s3rver). Usage:
// node s3rver-main.mjs <port> <directory> <bucket>...
import { createHash } from 'node:crypto';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import S3rver from 's3rver';
import FilesystemStore from 's3rver/lib/stores/filesystem.js';

const [portArg, directory, ...buckets] = process.argv.slice(2);
if (portArg === undefined || directory === undefined || buckets.length === 0) {
  process.stderr.write('usage: s3rver-main.mjs <port> <directory> <bucket>...\n');
  process.exit(2);
}

// The parent holds our stdin open; EOF means it died without killing us (SIGKILL, crash), and a
// leftover server would keep the port and confuse the next run.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

// s3rver writes a PUT's body straight over the object file as it arrives, so a client killed
// mid-upload leaves a truncated object and a concurrent GET can read a half-written one. S3 stores
// an object whole or not at all; tests that crash clients during uploads rely on that.
let tempCounter = 0;
FilesystemStore.prototype.putObject = async function putObjectAtomically(object) {
  const content = Buffer.isBuffer(object.content) ? object.content : await readWholeBody(object.content, object.metadata);
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
  await mkdir(dirname(objectPath), { recursive: true });
  const temp = `${objectPath}.${process.pid}.${tempCounter++}.tmp`;
  await writeFile(temp, content);
  await rename(temp, objectPath);
  const md5 = createHash('md5').update(content).digest('hex');
  await this.putMetadata(object.bucket, object.key, object.metadata, md5);
  return { size: content.length, md5 };
};

async function readWholeBody(stream, headers) {
  const chunks = [];
  // Throws when the client disconnects mid-body.
  for await (const chunk of stream) chunks.push(chunk);
  const body = Buffer.concat(chunks);
  const declared = headers?.['content-length'];
  if (declared !== undefined && Number(declared) !== body.length) {
    throw new Error(`PUT body has ${body.length} bytes, Content-Length says ${declared}`);
  }
  return body;
}

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
