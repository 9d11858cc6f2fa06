import { createDecipheriv } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { opensCheckValue, sealCheckValue } from '../src/engine/check-value';
import type { ModuleTarget } from '../src/engine/module';
import { openFleetToken } from '../src/engine/replicate';
import { versionKey } from '../src/engine/token';
import type { RecordedKey } from '../src/engine/key-lookup';
import { type EmulatedProfile, type EmuControls, vendorEmuModule, writeEmuControls } from '../testbed/hsm-setups';
import { hsmConfig, kindOf, openEngine } from './support/engine';
import { testHsm } from './support/hsm';

/**
 * Key check values (src/engine/check-value.ts) on SoftHSM2, directly and behind the vendor emulation
 * (testbed/vendor-emu.c): sealed under whichever IV source the module takes, opened under every other, and
 * checked by the engine once per key handle before the key is first used.
 */
const h = testHsm();
const emu = { module: vendorEmuModule(), controls: join(mkdtempSync(join(tmpdir(), 'xks-check-value-')), 'controls') };
afterAll(() => rmSync(dirname(emu.controls), { recursive: true, force: true }));

/** Each way an HSM chooses the IV (testbed/vendor-emu.c), with the IV length it gives. */
type Mode = { name: string; profile?: EmulatedProfile; controls?: EmuControls; ivBytes: number };
const MODES: Mode[] = [
  { name: 'SoftHSM2 (the proxy draws the IV)', ivBytes: 12 },
  { name: 'cloudhsm (writes a zeroed pIv)', profile: 'cloudhsm', ivBytes: 12 },
  { name: 'nshield (writes a zeroed pIv)', profile: 'nshield', ivBytes: 12 },
  { name: 'luna-fips (appends a 12-byte IV)', profile: 'luna-fips', ivBytes: 12 },
  { name: 'luna-fips (appends a 16-byte IV)', profile: 'luna-fips', controls: { iv_bytes: 16 }, ivBytes: 16 },
];

function target(mode: Mode): { target: ModuleTarget; pin: string } {
  if (!mode.profile) return { target: { modulePath: h.modulePath, tokenLabel: h.tokenLabel, environment: h.environment, libraryParameters: h.libraryParameters }, pin: h.pin };
  return {
    target: { modulePath: emu.module, tokenLabel: h.tokenLabel, environment: h.environment, libraryParameters: `profile=${mode.profile} control=${emu.controls}` },
    pin: mode.profile === 'cloudhsm' ? `xks_cu:${h.pin}` : h.pin,
  };
}

/** Runs fn on a logged-in session of the test token through this mode's module. */
function onToken<T>(mode: Mode, fn: (t: ReturnType<typeof openFleetToken>) => T): T {
  writeEmuControls(emu.controls, mode.controls ?? {});
  const { target: tg, pin } = target(mode);
  const t = openFleetToken(tg, pin);
  try {
    return fn(t);
  } finally {
    t.close();
  }
}

const AAD = Buffer.from('xks-proxy key check value v1');

describe('a check value sealed under any IV source opens under every other', () => {
  const sealed: { by: string; value: string }[] = [];

  it.each(MODES)('$name: seals with a $ivBytes-byte IV what node:crypto opens with the known key', (mode) => {
    const value = onToken(mode, (t) => sealCheckValue(t.mod, t.session, versionKey(t, 'known-key'), { gcmParams: 'v240' }));
    const raw = Buffer.from(value, 'base64');
    expect(raw.length).toBe(mode.ivBytes + 32 + 16);
    const iv = raw.subarray(0, mode.ivBytes);
    expect(iv.equals(Buffer.alloc(mode.ivBytes))).toBe(false);
    const d = createDecipheriv('aes-256-gcm', Buffer.from(h.knownKeyHex, 'hex'), iv);
    d.setAAD(AAD);
    d.setAuthTag(raw.subarray(raw.length - 16));
    expect(Buffer.concat([d.update(raw.subarray(mode.ivBytes, raw.length - 16)), d.final()]).equals(Buffer.alloc(32))).toBe(true);
    sealed.push({ by: mode.name, value });
  });

  it.each(MODES)('$name: opens every value sealed above, and another key opens none', (mode) => {
    const opened = onToken(mode, (t) =>
      sealed.map(({ by, value }) => ({ by, known: opensCheckValue(t.mod, t.session, versionKey(t, 'known-key'), value, 'v240'), other: opensCheckValue(t.mod, t.session, versionKey(t, 'test-key-2'), value, 'v240') })),
    );
    expect(opened).toEqual(sealed.map(({ by }) => ({ by, known: true, other: false })));
  });
});

describe('the engine uses a key only once its object opens the recorded check value', () => {
  it('one decrypt per handle; a refusal is cached, published each time, and looked at again when the record changes', async () => {
    const good = onToken(MODES[0]!, (t) => sealCheckValue(t.mod, t.session, versionKey(t, 'known-key'), { gcmParams: 'v240' }));
    const again = onToken(MODES[0]!, (t) => sealCheckValue(t.mod, t.session, versionKey(t, 'known-key'), { gcmParams: 'v240' }));
    // test-key-2 is recorded with known-key's check value: other key material under the label.
    const records = new Map<string, RecordedKey>([
      ['known-key', { checkValue: good }],
      ['test-key-2', { checkValue: good }],
    ]);
    const { engine, faults, events } = await openEngine(hsmConfig({ modulePath: h.modulePath, tokenLabel: h.tokenLabel, environment: h.environment, libraryParameters: h.libraryParameters }), h.pin, { recordOf: (l) => records.get(l) });
    const refusals: string[] = [];
    events.subscribe('key.check-failed', (e) => refusals.push(e.hsm));
    try {
      const decryptInits = (): number => faults.calls.C_DecryptInit ?? 0;
      const start = decryptInits();
      for (let i = 0; i < 5; i++) await engine.encrypt('known-key', Buffer.from('data'), Buffer.alloc(0));
      expect(decryptInits() - start).toBe(1);
      for (let i = 0; i < 3; i++) expect(await kindOf(engine.encrypt('test-key-2', Buffer.from('data'), Buffer.alloc(0)))).toBe('key-unusable');
      expect(decryptInits() - start).toBe(2);
      expect(refusals).toEqual([h.tokenLabel, h.tokenLabel, h.tokenLabel]);
      expect(await kindOf(engine.checkKey('test-key-2'))).toBe('key-unusable');
      // A reload that records another check value (a version given one by key check-values) is checked at the next use.
      records.set('known-key', { checkValue: again });
      await engine.encrypt('known-key', Buffer.from('data'), Buffer.alloc(0));
      expect(decryptInits() - start).toBe(3);
      // Without a check value (a version made before they were recorded) nothing is opened, as before.
      records.delete('test-key-2');
      expect(await kindOf(engine.encrypt('test-key-2', Buffer.from('data'), Buffer.alloc(0)))).toBe('resolved');
      expect(decryptInits() - start).toBe(3);
    } finally {
      await engine.close();
    }
  });
});
