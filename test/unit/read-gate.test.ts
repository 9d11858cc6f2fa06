import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { ProxyEvents } from '../../src/events';
import { ReadGate } from '../../src/http/read-gate';

/** What the gate uses of a socket: pause, resume, 'close', destroyed. */
class FakeSocket extends EventEmitter {
  paused = false;
  destroyed = false;
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    return this;
  }
  close(): void {
    this.destroyed = true;
    this.emit('close');
  }
  destroy(): this {
    if (!this.destroyed) this.close();
    return this;
  }
}

const asSocket = (s: FakeSocket): Socket => s as unknown as Socket;

function setup(n: number, opts: { minReading?: number; staleAfterMs?: number; staleShare?: number; maxConnections?: number; events?: ProxyEvents } = {}) {
  let now = 0;
  const gate = new ReadGate({
    targetMs: 20,
    minReading: opts.minReading ?? 2,
    staleAfterMs: opts.staleAfterMs ?? 200,
    staleShare: opts.staleShare,
    maxConnections: opts.maxConnections,
    events: opts.events,
    now: () => now,
  });
  const sockets = Array.from({ length: n }, () => new FakeSocket());
  for (const s of sockets) gate.opened(asSocket(s));
  /** Every socket answered once, in order (a closed-loop round). */
  const round = (served = true): void => sockets.forEach((s) => !s.destroyed && !s.paused && gate.answered(asSocket(s), served));
  return { gate, sockets, round, advance: (ms: number) => (now += ms) };
}

describe('ReadGate', () => {
  it('reads every connection while the event loop keeps up, and a single late sample changes nothing', () => {
    const { gate, sockets, round } = setup(10);
    gate.sample(5);
    round();
    gate.sample(500);
    round();
    expect(sockets.filter((s) => s.paused)).toHaveLength(0);
    expect(gate.stats()).toEqual({ reading: 10, paused: 0, idle: 0, limit: Infinity });
  });

  it('pauses connections over the limit once the loop stays behind, at their answer, never mid-request', () => {
    const { gate, sockets, round } = setup(10);
    gate.sample(25);
    gate.sample(25);
    // The limit is down (10 x 0.8: at most a fifth off when only a little late), but nothing is paused
    // until a connection's answer has left.
    expect(gate.stats()).toMatchObject({ reading: 10, limit: 8 });
    expect(sockets.filter((s) => s.paused)).toHaveLength(0);
    round();
    expect(sockets.filter((s) => s.paused)).toHaveLength(2);
    expect(gate.stats()).toMatchObject({ reading: 8, paused: 2 });
    // Far behind (a loop turn 5 times the target): down in proportion, to a fifth.
    gate.sample(100);
    expect(gate.stats()).toMatchObject({ limit: 2 });
    // Further decreases, down to the floor.
    for (let i = 0; i < 20; i++) gate.sample(50);
    round();
    expect(gate.stats()).toMatchObject({ reading: 2, paused: 8, limit: 2 });
  });

  it('resumes the most recently paused connections first once the loop keeps up, and turns itself off when nothing waits', () => {
    const { gate, sockets, round } = setup(6);
    for (let i = 0; i < 10; i++) gate.sample(50);
    round();
    const pausedOrder = sockets.filter((s) => s.paused);
    expect(pausedOrder).toHaveLength(4);
    gate.sample(5); // limit 2 -> 3: one comes back, the last one paused
    expect(pausedOrder.map((s) => s.paused)).toEqual([true, true, true, false]);
    for (let i = 0; i < 10; i++) gate.sample(5);
    expect(sockets.filter((s) => s.paused)).toHaveLength(0);
    expect(gate.stats().limit).toBe(Infinity);
  });

  it('keeps serving the connections it serves under a standing overload (no rotation), so their answers stay fast', () => {
    const { gate, sockets, round } = setup(8);
    for (let i = 0; i < 10; i++) gate.sample(50);
    round();
    const served = sockets.filter((s) => !s.paused);
    // The loop hovers around its target: the limit moves a little, the same connections keep it.
    for (let i = 0; i < 50; i++) {
      gate.sample(i % 2 ? 50 : 8);
      round();
    }
    expect(served.every((s) => !s.paused)).toBe(true);
  });

  it('has a connection paused past the deadline refused unread, within a share of the served answers, oldest first', () => {
    const { gate, sockets, round, advance } = setup(6, { staleShare: 0.5 });
    for (let i = 0; i < 10; i++) gate.sample(50);
    round(false);
    const paused = sockets.filter((s) => s.paused);
    expect(paused).toHaveLength(4);
    advance(250);
    // Two served answers earn one refusal (share 0.5).
    gate.answered(asSocket(sockets.find((s) => !s.paused)!), true);
    gate.answered(asSocket(sockets.find((s) => !s.paused)!), true);
    gate.sample(50);
    const resumed = paused.filter((s) => !s.paused);
    expect(resumed).toEqual([paused[0]]);
    expect(gate.takeStale(asSocket(paused[0]!))).toBe(true);
    // Once only; other connections are not marked.
    expect(gate.takeStale(asSocket(paused[0]!))).toBe(false);
    expect(gate.takeStale(asSocket(paused[1]!))).toBe(false);
  });

  it('does not refuse a paused connection before the deadline, nor a request sent long after the resume', () => {
    const { gate, sockets, round, advance } = setup(4, { staleShare: 1 });
    for (let i = 0; i < 10; i++) gate.sample(50);
    round(false);
    const paused = sockets.filter((s) => s.paused);
    gate.answered(asSocket(sockets.find((s) => !s.paused)!), true);
    advance(100);
    gate.sample(50);
    expect(paused.every((s) => s.paused)).toBe(true);
    advance(150);
    gate.sample(50);
    expect(paused[0]!.paused).toBe(false);
    advance(300);
    expect(gate.takeStale(asSocket(paused[0]!))).toBe(false);
  });

  it('near server.maxConnections closes the oldest connections paused past the stale limit (their clients gave up; a paused socket never sees the close), and only those', () => {
    const events = new ProxyEvents();
    let closedStale = 0;
    events.subscribe('connection.closedStale', () => closedStale++);
    const overloaded = (maxConnections?: number) => {
      const t = setup(10, { maxConnections, events });
      for (let i = 0; i < 10; i++) t.gate.sample(50);
      t.round(false); // no 200s: no credit to refuse stale connections with
      return t;
    };
    const { gate, sockets, advance } = overloaded(10);
    const paused = sockets.filter((s) => s.paused);
    expect(paused.length).toBeGreaterThan(2);
    advance(100);
    gate.sample(50);
    expect(sockets.filter((s) => s.destroyed)).toHaveLength(0); // not stale yet
    advance(150);
    gate.sample(50);
    // 10 open, 9 allowed (90% of the cap): the oldest paused one goes, the others stay paused.
    expect(sockets.filter((s) => s.destroyed)).toEqual([paused[0]]);
    const st = gate.stats();
    expect({ open: st.reading + st.idle, paused: st.paused, closedStale }).toEqual({ open: 10 - paused.length, paused: paused.length - 1, closedStale: 1 });
    gate.sample(50);
    expect(sockets.filter((s) => s.destroyed)).toHaveLength(1);

    // Far from the cap, nothing is closed, however long the connections wait.
    const roomy = overloaded(1000);
    roomy.advance(10_000);
    roomy.gate.sample(50);
    expect(roomy.sockets.filter((s) => s.destroyed)).toHaveLength(0);
  });

  it('counts idle keep-alive connections apart: a cut falls on the connections with requests coming, not all of them', () => {
    const { gate, sockets, round, advance } = setup(20);
    const idle = Array.from({ length: 200 }, () => new FakeSocket());
    for (const s of idle) {
      gate.opened(asSocket(s));
      gate.answered(asSocket(s), true);
    }
    round();
    advance(150);
    round(); // the 20 are busy; the 200 have had no request since
    advance(100);
    gate.sample(25); // 200 ms without an answer: idle
    gate.sample(25); // a standing queue, a little late: down by a fifth of the busy ones
    expect(gate.stats()).toMatchObject({ reading: 20, idle: 200, limit: 16 });
    round();
    expect(sockets.filter((s) => s.paused)).toHaveLength(4);
    // An idle one with a request again is read, and counts again.
    gate.answered(asSocket(idle[0]!), true);
    expect(gate.stats()).toMatchObject({ idle: 199 });
    idle[1]!.close();
    expect(gate.stats()).toMatchObject({ idle: 198 });
  });

  it('forgets closed connections, paused or not', () => {
    const { gate, sockets, round } = setup(6);
    for (let i = 0; i < 10; i++) gate.sample(50);
    round();
    for (const s of sockets) s.close();
    expect(gate.stats()).toMatchObject({ reading: 0, paused: 0 });
    for (let i = 0; i < 10; i++) gate.sample(5);
    expect(gate.stats().limit).toBe(Infinity);
  });

  it('counts a paused connection that delivered a request anyway (resumed by node:http) as read', () => {
    const { gate, sockets } = setup(3);
    for (let i = 0; i < 10; i++) gate.sample(50);
    for (const s of sockets) gate.answered(asSocket(s), true);
    expect(gate.stats()).toMatchObject({ reading: 2, paused: 1 });
    const p = sockets.find((s) => s.paused)!;
    p.paused = false; // resumed behind the gate's back
    gate.answered(asSocket(p), true);
    // Counted as read again, and over the limit it is paused again.
    expect(gate.stats()).toMatchObject({ reading: 2, paused: 1 });
    expect(p.paused).toBe(true);
  });
});

describe('ReadGate in a loop turn that has already run late', () => {
  it('pauses a connection answered in it at once, before any sample lowered the limit, and resumes it gradually once the loop keeps up', () => {
    let behind = 0;
    const gate = new ReadGate({ targetMs: 20, staleAfterMs: 200, behind: () => behind, now: () => 0 });
    const sockets = Array.from({ length: 4 }, () => new FakeSocket());
    for (const s of sockets) gate.opened(asSocket(s));
    gate.answered(asSocket(sockets[0]!), true);
    behind = 30; // a burst read in one turn: the later answers of the turn leave late
    gate.answered(asSocket(sockets[1]!), true);
    gate.answered(asSocket(sockets[2]!), true);
    expect(sockets.map((s) => s.paused)).toEqual([false, true, true, false]);
    // A late sample resumes nothing.
    gate.sample(30);
    expect(sockets.filter((s) => s.paused)).toHaveLength(2);
    // Once the loop keeps up they come back at the limit's pace (newest first), not all in one turn.
    behind = 0;
    gate.sample(5);
    expect(sockets.map((s) => s.paused)).toEqual([false, true, false, false]);
    for (let i = 0; i < 5; i++) gate.sample(5);
    expect(sockets.every((s) => !s.paused)).toBe(true);
    expect(gate.stats().limit).toBe(Infinity);
  });
});

describe('ReadGate resuming a connection paused for long', () => {
  it('serves it when there is room again (a moment of starvation must not turn into refusals)', () => {
    let now = 0;
    const gate = new ReadGate({ targetMs: 20, minReading: 2, staleAfterMs: 1000, staleShare: 0, now: () => now });
    const sockets = Array.from({ length: 4 }, () => new FakeSocket());
    for (const s of sockets) gate.opened(asSocket(s));
    for (let i = 0; i < 10; i++) gate.sample(50);
    for (const s of sockets) gate.answered(asSocket(s), false);
    const paused = sockets.filter((s) => s.paused);
    expect(paused).toHaveLength(2);
    now = 5000;
    for (let i = 0; i < 10; i++) gate.sample(1);
    expect(paused.every((s) => !s.paused)).toBe(true);
    expect(paused.map((s) => gate.takeStale(asSocket(s)))).toEqual([false, false]);
  });
});

describe('ReadGate under a standing overload with nothing served', () => {
  it('keeps no entry for connections that closed while paused (a connection per request must not grow memory)', () => {
    const gate = new ReadGate({ targetMs: 20, minReading: 2, staleAfterMs: 1000, now: () => 0 });
    const busy = Array.from({ length: 4 }, () => new FakeSocket());
    for (const s of busy) gate.opened(asSocket(s));
    gate.sample(100);
    gate.sample(100);
    // No answer is a 200 (no stale credit) and the loop stays behind: nothing resumes or refuses.
    for (let i = 0; i < 20_000; i++) {
      const s = new FakeSocket();
      gate.opened(asSocket(s));
      gate.answered(asSocket(s), false);
      expect(s.paused).toBe(true);
      s.close();
      if (i % 100 === 0) gate.sample(100);
    }
    expect(gate.stats()).toMatchObject({ reading: 4, paused: 0 });
    expect(gate.listed()).toBeLessThanOrEqual(2048);
  });
});
