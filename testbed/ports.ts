import net from 'node:net';

function listenOn(port: number): Promise<net.Server | null> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(null));
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

/** A port free on 127.0.0.1 right now (the kernel's pick; another process may take it before the caller does). */
export async function freePort(): Promise<number> {
  const s = await listenOn(0);
  if (!s) throw new Error('no free port on 127.0.0.1');
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

/** A free port p with p+1 free too (the proxy's ops listener). */
export async function freePortPair(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const a = await listenOn(0);
    if (!a) continue;
    const port = (a.address() as net.AddressInfo).port;
    const b = port < 65535 ? await listenOn(port + 1) : null;
    await new Promise((r) => a.close(r));
    if (b) {
      await new Promise((r) => b.close(r));
      return port;
    }
  }
  throw new Error('no free port pair on 127.0.0.1');
}
