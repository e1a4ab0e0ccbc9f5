/**
 * The Node.js release line Holdfast runs on, everywhere: `npm start` and `npm test` (the `node`
 * package in devDependencies), the container image (Dockerfile), the esbuild targets of the gateway
 * and function bundles (scripts/build.mjs, loaded by Node's type stripping) and the Lambda runtime
 * (infra/). tests/unit/node-runtime.test.ts fails when any of them, package.json or the README
 * names another line.
 *
 * 24 is an LTS line until April 2028; the AWS SDK's releases after January 2027 need Node 22 or newer
 * and warn on every client under older lines.
 */
export const NODE_MAJOR = 24;

/** esbuild's `target` for every bundle. */
export const ESBUILD_NODE_TARGET = `node${NODE_MAJOR}`;

/** The AWS Lambda runtime identifier of the functions. */
export const LAMBDA_NODE_RUNTIME = `nodejs${NODE_MAJOR}.x`;
