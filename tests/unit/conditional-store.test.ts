import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { LocalDirectoryStore } from '../../gateway/store/local-store.js';
import { conditionalSuite } from '../helpers/conditional-suite.js';
import { MemoryStore } from '../helpers/memory-store.js';

conditionalSuite('LocalDirectoryStore', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hf-cas-'));
  return { store: new LocalDirectoryStore(dir), dispose: () => rm(dir, { recursive: true, force: true }) };
});

conditionalSuite('MemoryStore (the model tests’ store)', async () => ({ store: new MemoryStore(), dispose: async () => undefined }));
