#!/usr/bin/env node
import { loadConfigFile } from '../config/load';
import { generateCredential } from '../sigv4/credentials';
import { findSecretKeys, generateKek, keyLabel, openTokenSession, TokenSession } from '../engine/token';

const USAGE = `usage: xks-admin <command> [options]

HSM connection: --config FILE (uses its hsm section), or --module PATH --token LABEL with the PIN in
XKS_HSM_PIN.

commands:
  generate-key --label LABEL   generate a non-extractable AES-256 key inside the HSM
  list-keys                    list the labels of secret keys on the token
  new-credential [--prefix P]  print a new SigV4 credential and the KMS console JSON for it
  help                         this text`;

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

function connect(args: string[]): TokenSession {
  const configFile = flag(args, '--config');
  if (configFile) {
    const rt = loadConfigFile(configFile);
    return openTokenSession(rt.config.hsm.modulePath, rt.config.hsm.tokenLabel, rt.hsmPin, rt.config.hsm.environment);
  }
  const modulePath = flag(args, '--module');
  const token = flag(args, '--token');
  const pin = process.env.XKS_HSM_PIN;
  if (!modulePath || !token || !pin) throw new Error('give --config FILE, or --module and --token with XKS_HSM_PIN set');
  return openTokenSession(modulePath, token, pin);
}

function main(argv: string[]): number {
  const [command, ...args] = argv;
  switch (command) {
    case 'generate-key': {
      const label = flag(args, '--label');
      if (!label) throw new Error('generate-key needs --label');
      const t = connect(args);
      try {
        generateKek(t, label);
      } finally {
        t.close();
      }
      console.log(JSON.stringify({ generated: label }));
      return 0;
    }
    case 'list-keys': {
      const t = connect(args);
      try {
        for (const k of findSecretKeys(t)) console.log(keyLabel(t, k));
      } finally {
        t.close();
      }
      return 0;
    }
    case 'new-credential': {
      const prefix = flag(args, '--prefix') ?? '';
      const c = generateCredential();
      console.log(
        JSON.stringify(
          {
            XksProxyUriPath: `${prefix}/kms/xks/v1`,
            XksProxyAuthenticationCredential: { AccessKeyId: c.accessKeyId, RawSecretAccessKey: c.secretAccessKey },
          },
          null,
          2,
        ),
      );
      return 0;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE);
      return command === undefined ? 2 : 0;
    default:
      console.error(`unknown command ${command}\n\n${USAGE}`);
      return 2;
  }
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (e) {
  console.error(`xks-admin: ${(e as Error).message}`);
  process.exitCode = 1;
}
