// ESLint (typescript-eslint, type-aware) over the product (src/), its tests, the bench and the testbed
// (`npm run lint`, also run by `npm test`). Each TypeScript file is checked against the program of the
// tsconfig that builds it; a rule is turned off only with the reason next to it.
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig(
  globalIgnores(['dist/', 'dist-bench/', 'coverage/', '.demo/']),
  js.configs.recommended,
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: {
        // The first project that holds a file is its program: src/ (tsconfig.json), bench/ and testbed/
        // (tsconfig.bench.json), test/, bench/test/ and helm/chart-files.ts (test/tsconfig.json).
        project: ['./tsconfig.json', './tsconfig.bench.json', './test/tsconfig.json'],
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // Off: `async` without `await` is how an implementation of a Promise-returning interface turns a
      // throw into a rejection; a forgotten await is no-floating-promises' finding.
      '@typescript-eslint/require-await': 'off',
      // Promise.all over values that are promises or not (a synchronous fast path, an optional step) is meant.
      '@typescript-eslint/await-thenable': ['error', { allowMixedPromiseArrays: true }],
      // A `let` that a closure reads before its one assignment cannot be a const (it would throw there).
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // Passing on a caught value (unknown) is no invented non-Error reason; `reject('text')` still is one.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      // `_`-prefixed names say "unused on purpose" (a field left out of a rest copy), as tsc takes them.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: { sourceType: 'commonjs', globals: { ...globals.node } },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { sourceType: 'module' },
  },
);
