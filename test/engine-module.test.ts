import { applyModuleEnvironment, fieldText, libraryParametersForBinding } from '../src/engine/module';

/** The module helpers that need no HSM. */
describe('module environment', () => {
  it('sets the variables a module reads, and refuses a second module that needs another value for one of them', () => {
    applyModuleEnvironment({ XKS_TEST_MODULE_CONF: '/etc/a.conf' });
    expect(process.env.XKS_TEST_MODULE_CONF).toBe('/etc/a.conf');
    applyModuleEnvironment({ XKS_TEST_MODULE_CONF: '/etc/a.conf', XKS_TEST_OTHER_VENDOR: '/etc/b' });
    expect(() => applyModuleEnvironment({ XKS_TEST_MODULE_CONF: '/etc/other.conf', XKS_TEST_THIRD: 'x' })).toThrow(/XKS_TEST_MODULE_CONF.*separate processes/);
    // Refused whole: nothing of the refused set was applied.
    expect(process.env.XKS_TEST_MODULE_CONF).toBe('/etc/a.conf');
    expect(process.env.XKS_TEST_THIRD).toBeUndefined();
  });
});

describe('PKCS#11 text', () => {
  it('strips the blank and NUL padding of fixed-width fields', () => {
    expect(fieldText('NSS Certificate DB              ')).toBe('NSS Certificate DB');
    expect(fieldText('xks-test\0\0\0\0')).toBe('xks-test');
  });

  it('gives the binding a parameter string with one expendable last character', () => {
    expect(libraryParametersForBinding("configdir='sql:/x' flags=")).toBe("configdir='sql:/x' flags= ");
  });
});
