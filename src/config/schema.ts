import { z } from 'zod';

/** Where a secret comes from. Inline values are allowed for demos; env and file keep secrets out of the config. */
const secretSourceSchema = z.union([
  z.object({ env: z.string().min(1) }).strict(),
  z.object({ file: z.string().min(1) }).strict(),
  z.object({ value: z.string().min(1) }).strict(),
]);
export type SecretSource = z.infer<typeof secretSourceSchema>;

/**
 * How a change to a setting reaches a running proxy, declared with .meta() next to the setting; a field
 * without its own rule has its section's. `live`: a reload (file change or SIGHUP) applies it. `restart`:
 * read once at start, so a reload that changes it is refused whole, naming the setting, and the proxy
 * keeps running on its previous configuration until restarted (src/config/reload-rules.ts; the Helm chart
 * rolls its pods on exactly these settings; README "Configuration reference" lists the rule per field).
 */
const LIVE = { reload: 'live' } as const;
const RESTART = { reload: 'restart' } as const;

export const EXTERNAL_KEY_ID = /^[A-Za-z0-9._-]{1,128}$/;
const ACCESS_KEY_ID = /^[A-Z2-7]{20,30}$/;
export const SECRET_ACCESS_KEY = /^[A-Za-z0-9+/=]{43,64}$/;
const PATH_PREFIX = /^(\/[A-Za-z0-9_-]+)*$/;
const XKS_SUFFIX = '/kms/xks/v1';

/** The spec's keyUsage values; the proxy itself performs only ENCRYPT and DECRYPT, the others are reported. */
export const KEY_USAGES = ['ENCRYPT', 'DECRYPT', 'SIGN', 'VERIFY', 'WRAP', 'UNWRAP'] as const;
export type KeyUsage = (typeof KEY_USAGES)[number];
const keyUsage = z.enum(KEY_USAGES);
const keyStatus = z.enum(['ENABLED', 'DISABLED']);

const keyVersionSchema = z
  .object({
    version: z.number().int().min(1).max(0xffff),
    label: z.string().min(1).max(255),
    /** HSM ids (hsms[].id) holding this version; absent = every HSM of the fleet. */
    hsms: z.array(z.string().min(1)).min(1).optional(),
    /** When the version was made (xks-admin records it): rotation schedules count from it. */
    createdAt: z.iso.datetime({ offset: true }).optional(),
    /** CKA_ID (hex) xks-admin gave the HSM key at create/import: the proxy uses only the object that carries it. */
    objectId: z.string().regex(/^(?:[0-9a-f]{2}){1,32}$/, 'must be hex, 1-32 bytes').optional(),
    /**
     * AES-GCM of a fixed block under the version's key, sealed by the HSM at create/import (base64 of iv || ciphertext
     * || tag, 12- or 16-byte IV): the proxy uses an HSM object only once it opens this (src/engine/check-value.ts).
     */
    checkValue: z
      .string()
      .regex(/^(?:[A-Za-z0-9+/]{80}|[A-Za-z0-9+/]{86}==)$/, 'must be the base64 of a 60- or 64-byte check value (xks-admin key check-values)')
      .optional(),
  })
  .strict();

/** Rotate every N days counted from startAt (or the version's creation), and/or after N encryptions per version. */
const rotationSchema = z
  .object({
    everyDays: z.number().int().min(1).max(3650).optional(),
    startAt: z.iso.datetime({ offset: true }).optional(),
    /** Random 96-bit IVs bound one AES-GCM key to 2^32 encryptions (NIST SP 800-38D 8.3). */
    maxEncryptions: z.number().int().min(1).max(2 ** 32).optional(),
  })
  .strict()
  .refine((r) => r.everyDays !== undefined || r.maxEncryptions !== undefined, { message: 'give everyDays, maxEncryptions or both' });

const ADMIN_NAME = /^[A-Za-z0-9._@-]{1,64}$/;

/** A person who takes part in governance; the private half of the Ed25519 key stays with them. */
const administratorSchema = z
  .object({
    name: z.string().regex(ADMIN_NAME, 'must be 1-64 characters of A-Z a-z 0-9 . _ @ -'),
    role: z.enum(['administrator', 'approver', 'auditor']),
    /** Ed25519 public key, base64 of the SPKI DER (xks-admin admin keygen prints it). */
    publicKey: z.string().regex(/^[A-Za-z0-9+/]{40,120}={0,2}$/, 'must be a base64 SPKI DER Ed25519 public key'),
  })
  .strict();

/** M approvals out of the named approvers for every change to the group's state. */
const quorumSchema = z
  .object({
    approvals: z.number().int().min(1).max(32),
    approvers: z.array(z.string().regex(ADMIN_NAME)).min(1).max(64),
  })
  .strict()
  .refine((q) => new Set(q.approvers).size === q.approvers.length, { message: 'approvers must be unique' })
  .refine((q) => q.approvals <= q.approvers.length, { message: 'approvals cannot exceed the number of approvers' });

/**
 * Where a quorum-protected group's state sits in its history (xks-admin change apply writes it): the proxy
 * refuses a state older than the newest it accepted, and a new state whose approvals expired.
 */
const revisionSchema = z
  .object({
    epoch: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
    /** State hash of the state this one replaces. */
    previous: z.string().regex(/^[0-9a-f]{64}$/).optional(),
    /** After this, the approvals no longer make the state acceptable for the first time. */
    expiresAt: z.iso.datetime({ offset: true }),
  })
  .strict();

/** An approver's Ed25519 signature over the group's canonical state hash. */
const approvalSchema = z
  .object({
    approver: z.string().regex(ADMIN_NAME),
    signature: z.string().regex(/^[A-Za-z0-9+/]{86}==$/, 'must be a base64 Ed25519 signature'),
  })
  .strict();

const keySchema = z
  .object({
    id: z
      .string()
      .regex(EXTERNAL_KEY_ID, 'must be 1-128 characters of A-Z a-z 0-9 . _ -')
      .refine((id) => id !== '.' && id !== '..', 'must not be "." or ".."'),
    /** HSM label of version 1; shorthand for versions: [{version: 1, label}]. */
    label: z.string().min(1).max(255).optional(),
    versions: z.array(keyVersionSchema).min(1).optional(),
    usage: z.array(keyUsage).min(1).max(10).default(['ENCRYPT', 'DECRYPT']),
    status: keyStatus.default('ENABLED'),
    /** Scheduled deletion: the key is unusable at once and its HSM material may be destroyed after `notBefore`. */
    deletion: z.object({ requestedAt: z.iso.datetime(), notBefore: z.iso.datetime() }).strict().optional(),
    rotation: rotationSchema.optional(),
  })
  .strict()
  .refine((k) => (k.label === undefined) !== (k.versions === undefined), {
    message: 'give exactly one of "label" or "versions"',
  })
  .refine((k) => !k.versions || new Set(k.versions.map((v) => v.version)).size === k.versions.length, {
    message: 'key versions must be unique',
    path: ['versions'],
  });

/** Values may end in "*" or contain "*" wildcards (e.g. arn:aws:iam::123456789012:role/app-*). */
const patterns = z.array(z.string().min(1).max(2048)).min(1);

const ruleSchema = z
  .object({
    /** Named in every audit line and AccessDenied log line this rule decides. */
    id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 1-64 characters of A-Z a-z 0-9 . _ -'),
    effect: z.enum(['allow', 'deny']),
    principals: patterns.optional(),
    /** Account of awsPrincipalArn. */
    principalAccounts: z.array(z.string().regex(/^\d{12}$/, 'must be a 12-digit account id')).min(1).optional(),
    sourceVpcs: patterns.optional(),
    sourceVpces: patterns.optional(),
    viaServices: patterns.optional(),
    kmsOperations: patterns.optional(),
    /** Account and region of kmsKeyArn. */
    keyAccounts: z.array(z.string().regex(/^\d{12}$/, 'must be a 12-digit account id')).min(1).optional(),
    keyRegions: patterns.optional(),
  })
  .strict();

const groupSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 1-64 characters of A-Z a-z 0-9 . _ -'),
    status: keyStatus.default('ENABLED'),
    /** Rules are matched on requestMetadata; deny wins; no matching allow rule means deny. */
    policy: z.object({ rules: z.array(ruleSchema) }).strict(),
    keys: z.array(keySchema).default([]),
    /** Changes to this group need M approvals (src/governance); the proxy refuses a state without them. */
    quorum: quorumSchema.optional(),
    revision: revisionSchema.optional(),
    approvals: z.array(approvalSchema).optional(),
  })
  .strict()
  .refine((g) => new Set(g.policy.rules.map((r) => r.id)).size === g.policy.rules.length, {
    message: 'rule ids must be unique within a group',
    path: ['policy', 'rules'],
  });

const credentialSchema = z
  .object({
    accessKeyId: z.string().regex(ACCESS_KEY_ID, 'must be 20-30 characters of A-Z and 2-7'),
    secretAccessKey: secretSourceSchema,
    /** When the credential was made (xks-admin records it): drives xks_sigv4_credential_age_days. */
    createdAt: z.iso.datetime({ offset: true }).optional(),
    /**
     * SHA-256 (hex) of the secret as resolved: the proxy refuses a secret that does not match. Once a key store
     * records it, its identity (credentials included) is part of the signed state of the protected groups it reaches.
     */
    secretSha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be the hex SHA-256 of the secret').optional(),
  })
  .strict();

const keyStoreSchema = z
  .object({
    name: z.string().min(1).max(64),
    pathPrefix: z
      .string()
      .regex(PATH_PREFIX, 'must be empty or "/" followed by segments of A-Z a-z 0-9 _ - (no trailing slash)')
      .refine((p) => (p + XKS_SUFFIX).length <= 128, 'XksProxyUriPath (prefix + /kms/xks/v1) must be at most 128 characters')
      .default(''),
    /** Regions accepted in the SigV4 credential scope; empty accepts any. */
    regions: z.array(z.string().regex(/^[a-z0-9-]{1,32}$/)).default([]),
    status: keyStatus.default('ENABLED'),
    credentials: z.array(credentialSchema).min(1),
    /** Request quota for this key store across the proxy's processes (0 = none). */
    requestsPerSecond: z.number().int().min(0).default(0),
    /** Groups whose keys this key store can reach. */
    groups: z.array(z.string().min(1)).default([]),
  })
  .strict()
  .refine((ks) => new Set(ks.credentials.map((c) => c.accessKeyId)).size === ks.credentials.length, {
    message: 'access key ids must be unique within a key store',
    path: ['credentials'],
  });

// No lookahead: the chart's values.schema.json carries this pattern, and Helm checks it with Go's RE2.
const DNS_NAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

const tlsSchema = z
  .object({
    certFile: z.string().min(1),
    keyFile: z.string().min(1),
    /** PEM bundle of CAs that client certificates must chain to; enables mTLS. */
    clientCaFile: z.string().min(1).optional(),
    /**
     * Accepted client identities, as DNS names, e.g. cks.kms.us-east-1.amazonaws.com (KMS's). A client
     * certificate matches by its subjectAltName DNS entries, as a TLS client checks a server's (a wildcard
     * stands for one leftmost label); its subject CN counts only when it has no DNS name there.
     */
    allowedClientSubjects: z.array(z.string().max(253).regex(DNS_NAME, 'must be a DNS name, e.g. cks.kms.us-east-1.amazonaws.com')).default([]),
    minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
  })
  .strict()
  .refine((t) => t.allowedClientSubjects.length === 0 || t.clientCaFile !== undefined, {
    message: 'allowedClientSubjects needs clientCaFile',
  });

/** One HSM (token) the proxy reaches through a PKCS#11 module. */
const hsmSchema = z
  .object({
    modulePath: z.string().min(1),
    /** Environment the module reads at load time, e.g. SOFTHSM2_CONF or a vendor's client config path. */
    environment: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()).default({}),
    /**
     * Passed to C_Initialize as CK_C_INITIALIZE_ARGS.pReserved, for modules that take their settings
     * there (NSS softoken: "configdir='sql:/path' certPrefix='' keyPrefix='' secmod='secmod.db' flags=").
     */
    libraryParameters: z.string().min(1).optional(),
    tokenLabel: z.string().min(1).max(32),
    pin: secretSourceSchema,
    /**
     * With async calls, a session does at most one HSM call per event-loop turn: its completion, and so
     * the session's next call, waits for the loop. A burst that makes turns 20-60 ms long then caps the
     * HSM at sessions per turn (8 sessions: 200-400 calls a second), and the pool refused a fresh
     * replica's first requests for 1-2 s at 1500 req/s (bench/cold-start.ts); 32 did not. The HSM must
     * allow replicas x workers x this many sessions.
     */
    sessionPoolSize: z.number().int().min(1).max(256).default(32),
    /**
     * CK_GCM_PARAMS layout: v2.40 (48 bytes, ulIvBits = 96: SoftHSM2, NSS, most HSMs); v2.30 (40 bytes, no
     * ulIvBits: older firmware). v230 needs pkcs11js patched (patches/, applied and checked by npm ci).
     */
    gcmParams: z.enum(['v240', 'v230']).default('v240'),
    /**
     * Who chooses the AES-GCM IV on encrypt; absent = learned at connect by probing, in this order:
     * proxy (a random IV the proxy passes: SoftHSM2, NSS, Luna outside FIPS mode), hsm-writes-zeroed (a
     * zeroed pIv the HSM fills: AWS CloudHSM, Entrust nShield), hsm-appends (no IV passed; the HSM returns
     * ciphertext || tag || IV: Luna 7 in FIPS mode). Set it to skip the probe's refused attempts.
     */
    ivSource: z.enum(['proxy', 'hsm-writes-zeroed', 'hsm-appends']).optional(),
    /**
     * Run C_Encrypt/C_Decrypt on libuv's thread pool (true) so a slow HSM cannot stall the event
     * loop and deadlines hold; false calls them inline, faster for a local HSM (SoftHSM2) but a
     * hung HSM then blocks the worker. C_*Init is always inline (pkcs11js has no async form).
     */
    asyncCalls: z.boolean().default(true),
    healthKeyLabel: z.string().min(1).default('xks-health-check'),
    /** Deep health results are reused for at most this long (spec: under one minute); a fleet's answer is refreshed at the shortest of its members'. */
    healthCacheMs: z.number().int().min(0).max(59_000).default(10_000),
    /**
     * GetKeyMetadata confirms each key version is on the token; a confirmation is reused this long.
     * The check is a synchronous C_GetAttributeValue (pkcs11js has no async form): on a network HSM
     * each is a round trip that stalls the event loop, so it is made at most once per version per period.
     */
    keyCheckCacheMs: z.number().int().min(0).max(60_000).default(1000),
    /** Name reported as ekmVendor; defaults to the token's manufacturer id. */
    vendor: z.string().min(1).optional(),
    /** First reconnect delay after an HSM fault; doubles up to 5 s (30 s while the HSM is misconfigured). */
    reconnectBackoffMs: z.number().int().min(10).max(5000).default(250),
  })
  .strict();

const HSM_ID = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * A fleet member: its id names it in health answers (ekmFleetDetails), metric labels (hsm_id) and key
 * placement (keys[].versions[].hsms). At most 10, the spec's limit for ekmFleetDetails.
 */
const fleetMemberSchema = hsmSchema.extend({ id: z.string().regex(HSM_ID, 'must be 1-64 characters of A-Z a-z 0-9 . _ -') });
type HsmMemberConfig = z.output<typeof fleetMemberSchema>;

export const configSchema = z
  .object({
    server: z
      .object({
        host: z.string().default('0.0.0.0'),
        port: z.number().int().min(0).max(65535).default(8443),
        /** Worker processes; "auto" = one per CPU. */
        workers: z.union([z.number().int().min(1).max(64), z.literal('auto')]).default(1),
        tls: tlsSchema.optional(),
        /** Serve plain HTTP: only when TLS is terminated upstream. Must be explicit. */
        insecurePlainHttp: z.boolean().default(false),
        maxBodyBytes: z.number().int().min(16 * 1024).max(1024 * 1024).default(64 * 1024).meta(LIVE),
        keepAliveTimeoutMs: z.number().int().min(1000).default(65_000),
        /**
         * Connection bounds, per worker process, so that unauthenticated clients cost little and not for long:
         * - maxConnections: open connections (TLS handshakes included) beyond this are closed at once, before any read.
         *   A stalled client holds up to maxBodyBytes plus its connection state (about 100 KB more with TLS), so the
         *   default keeps 10,000 hostile TLS connections under the Helm chart's 512Mi (bench/hostile-connections.ts).
         * - headersTimeoutMs: a TLS handshake, and the request line and headers, must each arrive within this.
         * - requestTimeoutMs: the whole request, body included; a late one gets 408 and the connection is closed.
         * Idle keep-alive connections are governed by keepAliveTimeoutMs alone. Read at startup, not on reload.
         */
        maxConnections: z.number().int().min(1).max(1_000_000).default(1024),
        headersTimeoutMs: z.number().int().min(500).max(120_000).default(5000),
        requestTimeoutMs: z.number().int().min(500).max(300_000).default(10_000),
        /** Accepted difference between x-amz-date and the proxy clock. */
        clockSkewSeconds: z.number().int().min(1).max(900).default(300).meta(LIVE),
        /**
         * Signed requests of all four operations run through the request path (loopback HTTP, a throwaway
         * key store, a stand-in for the HSM calls, which the HSM warm-up covers) before the port opens, so
         * that a new replica's first customer requests meet compiled code (src/http/warm-up.ts). 0 turns it off.
         * Live: it is used at each start only, so a change needs no restart and applies to the next one.
         */
        warmUpRequests: z.number().int().min(0).max(100_000).default(1024).meta(LIVE),
      })
      .strict()
      .prefault({})
      .refine((s) => s.tls !== undefined || s.insecurePlainHttp, {
        message: 'configure server.tls, or set server.insecurePlainHttp: true when TLS is terminated upstream',
      })
      .refine((s) => s.requestTimeoutMs >= s.headersTimeoutMs, {
        message: 'server.requestTimeoutMs (the whole request) must be at least server.headersTimeoutMs',
        path: ['requestTimeoutMs'],
      })
      .meta(RESTART),
    ops: z
      .object({
        host: z.string().default('0.0.0.0'),
        port: z.number().int().min(0).max(65535).default(9090),
        enabled: z.boolean().default(true),
      })
      .strict()
      .prefault({})
      .meta(RESTART),
    limits: z
      .object({
        /** A request still waiting on the HSM after this long gets DependencyTimeoutException. */
        deadlineMs: z.number().int().min(10).max(10_000).default(200),
        /** Requests allowed to wait for an HSM session; more get ThrottlingException. */
        maxQueue: z.number().int().min(0).default(512),
        maxPlaintextBytes: z.number().int().min(4300).max(65536).default(8192),
        // The HSM AAD carries the AAD length as a uint16 (spec "ciphertextMetadata"), so 65535 is the most it can hold.
        maxAadBytes: z.number().int().min(8192).max(65535).default(16384),
        /**
         * Event-loop delay that counts as overload (src/http/overload.ts): new key operations get 429 while
         * every sample for a whole deadline was later than this. Default: half of deadlineMs. 0: never shed.
         */
        eventLoopShedMs: z.number().int().min(0).max(10_000).optional(),
      })
      .strict()
      .prefault({})
      // Sizes the session pool's queue, the health check's budget and the event-loop guard at start.
      .meta(RESTART),
    proxy: z
      .object({
        vendor: z.string().min(1).default('xks-proxy project'),
        model: z.string().min(1).optional(),
        /** Replicas behind the endpoint; the Helm chart sets it from the replica count. */
        fleetSize: z.number().int().min(1).default(1),
      })
      .strict()
      .prefault({})
      // What GetHealthStatus reports: scaling the fleet must not restart it.
      .meta(LIVE),
    hsm: hsmSchema.optional().meta(RESTART),
    /** Several HSMs behind this proxy (give exactly one of hsm and hsms): see README "HSM fleet". */
    hsms: z.array(fleetMemberSchema).min(1).max(10).optional().meta(RESTART),
    keyStores: z.array(keyStoreSchema).min(1).meta(LIVE),
    groups: z.array(groupSchema).default([]).meta(LIVE),
    governance: z
      .object({
        administrators: z.array(administratorSchema).default([]),
        /**
         * Where each proxy process writes its encryption counts per key version (one file per process,
         * summed by `xks-admin key rotate-due`); a volume all replicas share. Unset: no counting.
         */
        usageDir: z.string().min(1).optional().meta(RESTART),
        /** How long a proposed change can collect approvals and be applied (default 72). Part of the pinned root. */
        approvalTtlHours: z.number().int().min(1).max(720).optional(),
      })
      .strict()
      .refine((g) => new Set(g.administrators.map((a) => a.name)).size === g.administrators.length, {
        message: 'administrator names must be unique',
        path: ['administrators'],
      })
      .prefault({})
      .meta(LIVE),
    audit: z
      .object({
        /** Hash-chained JSON lines; cluster workers append ".<worker>" to the name. */
        file: z.string().min(1).optional(),
        /**
         * The same chained lines on stdout, marked "stream":"xks-audit", one chain per pod and process:
         * the cluster's log pipeline keeps them after the pod is gone (read-only root filesystem).
         */
        stdout: z.boolean().default(false),
      })
      .strict()
      .refine((a) => !(a.file && a.stdout), { message: 'audit.file and audit.stdout are exclusive: choose one destination' })
      .prefault({})
      .meta(RESTART),
  })
  .strict()
  .refine((c) => new Set(c.groups.map((g) => g.name)).size === c.groups.length, {
    message: 'group names must be unique',
    path: ['groups'],
  })
  .refine((c) => new Set(c.keyStores.map((k) => k.pathPrefix)).size === c.keyStores.length, {
    message: 'path prefixes must be unique',
    path: ['keyStores'],
  })
  .refine((c) => new Set(c.keyStores.map((k) => k.name)).size === c.keyStores.length, {
    message: 'key store names must be unique',
    path: ['keyStores'],
  })
  .refine((c) => (c.hsm === undefined) !== (c.hsms === undefined), { message: 'give exactly one of "hsm" (one HSM) or "hsms" (a fleet)' })
  .refine((c) => !c.hsms || new Set(c.hsms.map((h) => h.id)).size === c.hsms.length, { message: 'HSM ids must be unique', path: ['hsms'] })
  .refine((c) => !c.hsms || new Set(c.hsms.map((h) => `${h.modulePath}\0${h.tokenLabel}`)).size === c.hsms.length, {
    message: 'two fleet members reach the same token (same modulePath and tokenLabel)',
    path: ['hsms'],
  })
  .superRefine((c, ctx) => {
    const ids = new Set(c.hsms ? c.hsms.map((h) => h.id) : [singleHsmId(c.hsm)]);
    c.groups.forEach((g, gi) =>
      g.keys.forEach((k, ki) =>
        (k.versions ?? []).forEach((v, vi) =>
          v.hsms?.forEach((id, hi) => {
            if (!ids.has(id)) ctx.addIssue({ code: 'custom', message: `no HSM with id "${id}" in hsms`, path: ['groups', gi, 'keys', ki, 'versions', vi, 'hsms', hi] });
          }),
        ),
      ),
    );
  })
  // Everything that reads config.hsm (one HSM's settings: pool size, health cache, key-check cache) keeps
  // working: it is the first member. config.hsms is always the fleet, of one when `hsm` was given.
  .transform(({ hsm, hsms, ...rest }) => {
    const fleet = hsms ?? [{ ...(hsm as HsmConfigOne), id: singleHsmId(hsm) }];
    return { ...rest, hsm: hsm ?? stripId(fleet[0] as HsmMemberConfig), hsms: fleet };
  });

type HsmConfigOne = z.output<typeof hsmSchema>;
/** The id of the single `hsm:` section: its token label, as GetHealthStatus already reported it. */
function singleHsmId(hsm: HsmConfigOne | undefined): string {
  const label = hsm?.tokenLabel ?? '';
  return HSM_ID.test(label) ? label : 'hsm-1';
}
function stripId({ id: _id, ...hsm }: HsmMemberConfig): HsmConfigOne {
  return hsm;
}

export type ProxyConfigInput = z.input<typeof configSchema>;
export type ProxyConfig = z.output<typeof configSchema>;
export type KeyStoreConfig = ProxyConfig['keyStores'][number];
export type GroupConfig = ProxyConfig['groups'][number];
export type KeyConfig = GroupConfig['keys'][number];
export type RuleConfig = GroupConfig['policy']['rules'][number];
export type TlsConfig = NonNullable<ProxyConfig['server']['tls']>;
