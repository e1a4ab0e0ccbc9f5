import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { NodeHttpHandler } from '@smithy/node-http-handler';

export interface FailFastHttpOptions {
  readonly connectTimeoutMs: number;
  /** Limit on waiting for the response headers, and on any silence while a body streams. */
  readonly requestTimeoutMs: number;
  readonly maxSockets: number;
}

/**
 * The HTTP handler of the AWS SDK clients (S3, EventBridge): requests fail instead of waiting. The
 * callers retry with their own back-off and must learn quickly that a service is down, which the
 * SDK's defaults (no request timeout, a warning instead of an error) would hide.
 */
export function failFastHttpHandler(opts: FailFastHttpOptions): NodeHttpHandler {
  const agentOptions = { keepAlive: true, maxSockets: opts.maxSockets };
  return new NodeHttpHandler({
    connectionTimeout: opts.connectTimeoutMs,
    // Without throwOnRequestTimeout the handler only logs a warning and keeps waiting.
    requestTimeout: opts.requestTimeoutMs,
    throwOnRequestTimeout: true,
    // requestTimeout stops counting once headers arrive; this covers a stall mid-body.
    socketTimeout: opts.requestTimeoutMs,
    // Agent instances rather than agent options: with options the handler builds a throwaway
    // non-keep-alive agent for every large (Expect: 100-continue) upload.
    httpAgent: new HttpAgent(agentOptions),
    httpsAgent: new HttpsAgent(agentOptions),
  });
}
