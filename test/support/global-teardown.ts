import { rmSync } from 'node:fs';
import { dirname } from 'node:path';

export default async function globalTeardown(): Promise<void> {
  const file = process.env.XKS_TEST_HSM;
  if (file) rmSync(dirname(file), { recursive: true, force: true });
}
