// ESLint for the whole repository: typescript-eslint's strict type-checked rules on TypeScript,
// formatting left to Prettier (eslint-config-prettier turns the rules that would fight it off).
// `npm run lint [PATH...]` runs it and `prettier --check`; see scripts/lint.mjs.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  { ignores: ['dist/', 'cdk.out/', 'node_modules/', 'bench/results/'] },
  js.configs.recommended,
  tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // `let x: T | undefined` declared before the closures that read it and assigned once below (the
      // wiring of components that call each other): a const there would throw in its temporal dead zone.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // `const { dropped: _, ...rest } = o` is how a field is left out of a copy.
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true }],
      // Numbers and booleans read naturally in messages; objects and undefined do not.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      // `void promise` marks a deliberately unawaited task; the rule then checks everything else.
      // node:test's test/describe/it return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { ignoreVoid: true, allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it'] }] },
      ],
    },
  },
  {
    // A wrong guess in a test fails the test; the assertion says more than a guard would.
    files: ['tests/**/*.ts'],
    // Fakes are async to match the interfaces they stand in for, with nothing to await.
    rules: { '@typescript-eslint/no-non-null-assertion': 'off', '@typescript-eslint/require-await': 'off' },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly', Buffer: 'readonly' } },
  },
  prettier,
);
