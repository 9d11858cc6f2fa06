import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** The checkout: two levels up from bench/lib/ when run from source (jest), three from dist-bench/bench/lib/ when compiled. */
export const ROOT = existsSync(join(__dirname, '..', '..', 'package.json')) ? join(__dirname, '..', '..') : join(__dirname, '..', '..', '..');

/** A file of the product as `npm run build` makes it (dist/src/): what the bench measures. */
export const productJs = (...path: string[]): string => join(ROOT, 'dist', 'src', ...path);

/** A file of the bench as `npm run build:bench` makes it (dist-bench/bench/), for the processes it starts. */
export const benchJs = (...path: string[]): string => join(ROOT, 'dist-bench', 'bench', ...path);

/** A thread's file of bench/lib: next to the caller when compiled, else (from source, under jest) its compiled copy in dist-bench/. */
export const libJs = (name: string): string => (existsSync(join(__dirname, name)) ? join(__dirname, name) : benchJs('lib', name));
