import { LibraryLock } from '../../src/engine/library-lock';

/** C_Initialize / C_Finalize alone per library; the other control calls of several threads side by side. */
describe('LibraryLock', () => {
  const deferred = () => {
    let open: () => void = () => undefined;
    const p = new Promise<void>((r) => (open = r));
    return { p, open };
  };
  const tick = () => new Promise((r) => setImmediate(r));

  it('runs shared calls together, an exclusive one alone, and the calls after a waiting exclusive one after it', async () => {
    const lock = new LibraryLock();
    const log: string[] = [];
    const login1 = deferred();
    const login2 = deferred();
    const finalize = deferred();
    const a = lock.run(false, async () => (log.push('login 1 starts'), await login1.p, log.push('login 1 ends')));
    const b = lock.run(false, async () => (log.push('login 2 starts'), await login2.p, log.push('login 2 ends')));
    const f = lock.run(true, async () => (log.push('finalize starts'), await finalize.p, log.push('finalize ends')));
    const c = lock.run(false, async () => void log.push('open session'));
    await tick();
    expect(log).toEqual(['login 1 starts', 'login 2 starts']);
    login1.open();
    await tick();
    expect(log).toEqual(['login 1 starts', 'login 2 starts', 'login 1 ends']);
    login2.open();
    await tick();
    expect(log.slice(-2)).toEqual(['login 2 ends', 'finalize starts']);
    finalize.open();
    await Promise.all([a, b, f, c]);
    expect(log.slice(-2)).toEqual(['finalize ends', 'open session']);
  });

  it('releases on failure', async () => {
    const lock = new LibraryLock();
    await expect(lock.run(true, async () => Promise.reject(new Error('CKR_GENERAL_ERROR')))).rejects.toThrow('CKR_GENERAL_ERROR');
    await expect(lock.run(true, async () => 'next')).resolves.toBe('next');
  });
});
