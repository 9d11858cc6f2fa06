import cluster from 'node:cluster';

/** `--name value` from this process's arguments, or `def`. */
export const serverArg = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] as string) : def;
};

/**
 * Runs `serve` in `workers` processes (cluster workers sharing the port, as the proxy's server.workers),
 * or in this one. SIGTERM to the primary stops the workers, then the primary.
 */
export function serveOnWorkers(workers: number, serve: () => void | Promise<void>): void {
  if (workers > 1 && cluster.isPrimary) {
    for (let i = 0; i < workers; i++) cluster.fork();
    process.once('SIGTERM', () => {
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
      setTimeout(() => process.exit(0), 2000).unref();
      cluster.on('exit', () => {
        if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
      });
    });
    return;
  }
  Promise.resolve(serve()).catch((e: unknown) => {
    console.error(`${process.argv[1] ?? 'server'}: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  });
}
