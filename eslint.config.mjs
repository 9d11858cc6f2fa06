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
      // Named for what they are: a promise handed to a callback that expects void is a bug.
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      // `_`-prefixed names are the project's way to say "unused on purpose" (tsc's noUnused* agree).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_', caughtErrors: 'none' }],
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
