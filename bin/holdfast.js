#!/usr/bin/env node
// The gateway is bundled into dist/ by `npm run build` (run by `npm install` through "prepare").
import '../dist/holdfast.js';
