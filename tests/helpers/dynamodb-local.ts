import type { AddressInfo } from 'node:net';
import { CreateTableCommand, DynamoDBClient, ScanCommand } from '@aws-sdk/client-dynamodb';
// dynalite ships no types; it is a DynamoDB implementation in JavaScript (the API, conditions and all).
// @ts-expect-error -- no declaration file
import dynalite from 'dynalite';

/**
 * A DynamoDB endpoint in this process (dynalite), so that the functions' real clients — Powertools'
 * DynamoDB persistence layer with its conditional writes, and our own — run against the DynamoDB
 * API rather than a mock. The SDK finds it through AWS_ENDPOINT_URL_DYNAMODB.
 */
export interface LocalDynamo {
  readonly endpoint: string;
  readonly client: DynamoDBClient;
  createTable(name: string): Promise<void>;
  /** Every item of `table`, unmarshalled to attribute → value text. */
  items(table: string): Promise<Record<string, string>[]>;
  close(): Promise<void>;
}

interface DynaliteServer {
  listen(port: number, host: string, cb: () => void): void;
  address(): AddressInfo;
  close(cb: () => void): void;
}

export async function startLocalDynamo(): Promise<LocalDynamo> {
  const server = (dynalite as (opts: Record<string, number>) => DynaliteServer)({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve) => {
    server.listen(0, '127.0.0.1', resolve);
  });
  const endpoint = `http://127.0.0.1:${server.address().port}`;
  Object.assign(process.env, {
    AWS_ENDPOINT_URL_DYNAMODB: endpoint,
    AWS_REGION: process.env.AWS_REGION ?? 'eu-west-1',
    AWS_ACCESS_KEY_ID: 'local',
    AWS_SECRET_ACCESS_KEY: 'local',
  });
  const client = new DynamoDBClient({ endpoint });
  return {
    endpoint,
    client,
    async createTable(name) {
      await client.send(
        new CreateTableCommand({
          TableName: name,
          KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
          AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'S' }],
          BillingMode: 'PAY_PER_REQUEST',
        }),
      );
    },
    async items(table) {
      const out = await client.send(new ScanCommand({ TableName: table }));
      return (out.Items ?? []).map((item) => Object.fromEntries(Object.entries(item).map(([k, v]) => [k, String(v.S ?? v.N ?? v.BOOL)])));
    },
    async close() {
      client.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      });
    },
  };
}
