/*
 * Vendor emulation for the test suites (never shipped): a PKCS#11 module that loads SoftHSM2, forwards
 * every call to it, and imposes one network HSM's documented behaviour on top, so that the proxy meets
 * in CI what CloudHSM, Luna or nShield would do to it. The facts and their sources are in
 * docs/hsm-vendors.md; testbed/vendor-emu.sh builds this file (gcc, p11-kit's pkcs11.h).
 *
 * The profile is read at C_Initialize: `profile=NAME` in CK_C_INITIALIZE_ARGS.pReserved (the proxy's
 * hsm.libraryParameters), else the environment variable XKS_EMU_PROFILE. (Jest gives test code a copy
 * of process.env that never reaches getenv, so tests that pick a profile at run time use pReserved.)
 *   cloudhsm   AWS CloudHSM SDK 5: CKM_AES_GCM takes a zeroed 12-byte pIv and the HSM writes the IV it
 *              chose there at C_EncryptInit; any other IV is refused. PIN "user:password". Read-write
 *              sessions only, no notify callback. At most 16,224 bytes of GCM data per call; single-part
 *              GCM only. One login per application (a second C_Login fails as already logged in).
 *   luna-fips  Thales Luna 7 in FIPS mode: a caller IV is refused (ulIvLen must be 0); the IV is
 *              generated and returned after the tag (ciphertext || tag || IV). ulIvBits must be set
 *              (firmware 7.9.3: ulIvBits 96 gives a 12-byte IV; control iv_bytes=16 emulates older
 *              firmware, which always returns 16 bytes). Single-part GCM only.
 *   nshield    Entrust nShield: the HSM generates the IV into a zeroed pIv, written when the operation
 *              completes (C_Encrypt / C_EncryptFinal), not at C_EncryptInit: the caller's buffer must
 *              stay alive in between. A failed tag is CKR_FUNCTION_FAILED.
 *   ha-flaky   a Luna HA group: with control flaky_per_mille=N, N in 1000 crypto calls invalidate their
 *              session (CKR_SESSION_HANDLE_INVALID); control lost=1 loses every member (every session
 *              call fails CKR_DEVICE_ERROR), and from then on only C_Finalize + C_Initialize (after
 *              lost=0) recovers; control login_delay_ms=N makes C_Login take N ms.
 *
 * Controls are read from the file named by `control=PATH` in pReserved or XKS_EMU_CONTROL, whenever it
 * changes (write it to a temporary file and rename it over, so that every change is a new inode).
 *
 * SoftHSM2 is process-wide and may have other users in the process (a plain SoftHSM2 fleet member), so
 * this module never finalizes it: its C_Finalize closes the sessions it opened, which is what a client
 * library's C_Finalize does to its own connections.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <p11-kit/pkcs11.h>

#ifndef EMU_TARGET
#define EMU_TARGET "/usr/lib/softhsm/libsofthsm2.so"
#endif

#define MAX_SESSIONS 4096
#define TAG_BYTES 16
#define CLOUDHSM_GCM_MAX_DATA 16224

enum profile { NONE, CLOUDHSM, LUNA_FIPS, NSHIELD, HA_FLAKY };
static const char *const PROFILE_NAMES[] = { "", "cloudhsm", "luna-fips", "nshield", "ha-flaky" };

/* The v2.30 CK_GCM_PARAMS (no ulIvBits); v2.40's is p11-kit's CK_GCM_PARAMS. */
struct gcm_params_v230 { CK_BYTE_PTR pIv; CK_ULONG ulIvLen; CK_BYTE_PTR pAAD; CK_ULONG ulAADLen; CK_ULONG ulTagBits; };

struct emu_session {
  int open;
  /* Invalidated (ha-flaky): answers CKR_SESSION_HANDLE_INVALID; really closed when the caller closes it. */
  int dead;
  CK_SLOT_ID slot;
  /* The GCM operation in progress, when this module changes its IV. */
  int gcm_encrypting, gcm_decrypting;
  CK_BYTE gen_iv[16];
  CK_ULONG gen_iv_bytes;
  /* nshield: the caller's pIv, written when the encryption completes. */
  CK_BYTE_PTR write_iv_to;
  /* luna-fips: the IV goes after the tag. */
  int append_iv;
};

struct controls {
  int lost;
  long login_delay_ms;
  long flaky_per_mille;
  long iv_bytes;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST_PTR real;
static CK_FUNCTION_LIST emu;
static enum profile profile = NONE;
static int initialized;
static int broken; /* ha-flaky: every member was lost since the last C_Initialize */
static int app_logged_in;
static struct emu_session sessions[MAX_SESSIONS];
static char control_path[4096];
static struct stat control_seen;
static struct controls ctl;

static void pad(unsigned char *field, size_t size, const char *text) {
  size_t n = strlen(text);
  memset(field, ' ', size);
  memcpy(field, text, n < size ? n : size);
}

static int single_part_only(void) { return profile == CLOUDHSM || profile == LUNA_FIPS; }
static int generates_iv(void) { return profile == CLOUDHSM || profile == LUNA_FIPS || profile == NSHIELD; }

/* ---- controls (caller holds the lock) */

static void read_controls(void) {
  struct stat st;
  struct controls next = { 0, 0, 0, 12 };
  if (control_path[0] == '\0') {
    ctl = next;
    return;
  }
  if (stat(control_path, &st) != 0) {
    ctl = next;
    memset(&control_seen, 0, sizeof control_seen);
    return;
  }
  if (st.st_ino == control_seen.st_ino && st.st_size == control_seen.st_size && st.st_mtim.tv_sec == control_seen.st_mtim.tv_sec &&
      st.st_mtim.tv_nsec == control_seen.st_mtim.tv_nsec)
    return;
  control_seen = st;
  FILE *f = fopen(control_path, "r");
  if (f != NULL) {
    char line[256];
    long n;
    while (fgets(line, sizeof line, f) != NULL) {
      if (sscanf(line, "lost=%ld", &n) == 1) next.lost = n != 0;
      else if (sscanf(line, "login_delay_ms=%ld", &n) == 1) next.login_delay_ms = n;
      else if (sscanf(line, "flaky_per_mille=%ld", &n) == 1) next.flaky_per_mille = n;
      else if (sscanf(line, "iv_bytes=%ld", &n) == 1) next.iv_bytes = n;
    }
    fclose(f);
  }
  ctl = next;
}

/* ---- initialisation arguments: "profile=NAME control=PATH" */

static void take_option(const char *text, const char *key, char *out, size_t size) {
  const char *at = strstr(text, key);
  if (at == NULL) return;
  at += strlen(key);
  size_t n = strcspn(at, " \t");
  if (n >= size) n = size - 1;
  memcpy(out, at, n);
  out[n] = '\0';
}

static enum profile profile_named(const char *name) {
  for (int p = CLOUDHSM; p <= HA_FLAKY; p++)
    if (strcmp(name, PROFILE_NAMES[p]) == 0) return (enum profile)p;
  return NONE;
}

/* ---- sessions (caller holds the lock) */

static struct emu_session *tracked(CK_SESSION_HANDLE h) {
  return h > 0 && h < MAX_SESSIONS && sessions[h].open ? &sessions[h] : NULL;
}

static void forget(CK_SESSION_HANDLE h) {
  memset(&sessions[h], 0, sizeof sessions[h]);
  for (int i = 1; i < MAX_SESSIONS; i++)
    if (sessions[i].open) return;
  app_logged_in = 0; /* the last session closed: the token logged the application out */
}

static int chance(long per_mille) {
  unsigned short r;
  if (per_mille <= 0 || getrandom(&r, sizeof r, 0) != sizeof r) return 0;
  return r % 1000 < (unsigned long)per_mille;
}

/* Entry to every call on a session: initialised, the HA group reachable, the session alive. */
static CK_RV enter(CK_SESSION_HANDLE h, struct emu_session *copy) {
  CK_RV rv = CKR_OK;
  pthread_mutex_lock(&lock);
  if (!initialized) rv = CKR_CRYPTOKI_NOT_INITIALIZED;
  else {
    read_controls();
    if (profile == HA_FLAKY && (ctl.lost || broken)) {
      broken = 1;
      rv = CKR_DEVICE_ERROR;
    } else {
      struct emu_session *s = tracked(h);
      if (s == NULL || s->dead) rv = CKR_SESSION_HANDLE_INVALID;
      else if (copy != NULL) *copy = *s;
    }
  }
  pthread_mutex_unlock(&lock);
  return rv;
}

/* ha-flaky: a crypto call that finds its HA member gone. */
static CK_RV flaky(CK_SESSION_HANDLE h) {
  CK_RV rv = CKR_OK;
  pthread_mutex_lock(&lock);
  if (profile == HA_FLAKY && chance(ctl.flaky_per_mille) && tracked(h) != NULL) {
    sessions[h].dead = 1;
    rv = CKR_SESSION_HANDLE_INVALID;
  }
  pthread_mutex_unlock(&lock);
  return rv;
}

static void set_op(CK_SESSION_HANDLE h, const struct emu_session *op) {
  pthread_mutex_lock(&lock);
  struct emu_session *s = tracked(h);
  if (s != NULL) {
    s->gcm_encrypting = op->gcm_encrypting;
    s->gcm_decrypting = op->gcm_decrypting;
    memcpy(s->gen_iv, op->gen_iv, sizeof s->gen_iv);
    s->gen_iv_bytes = op->gen_iv_bytes;
    s->write_iv_to = op->write_iv_to;
    s->append_iv = op->append_iv;
  }
  pthread_mutex_unlock(&lock);
}

static void end_op(CK_SESSION_HANDLE h) {
  struct emu_session none;
  memset(&none, 0, sizeof none);
  set_op(h, &none);
}

/* Ends SoftHSM2's operation after this module refused a call (a failed call ends the operation). */
static void abort_op(CK_SESSION_HANDLE h, int encrypting) {
  CK_BYTE scratch[64];
  CK_ULONG n = sizeof scratch;
  if (encrypting) real->C_EncryptFinal(h, scratch, &n);
  else real->C_DecryptFinal(h, scratch, &n);
  end_op(h);
}

#define SESSION_CALL(h) \
  do { \
    CK_RV entered = enter((h), NULL); \
    if (entered != CKR_OK) return entered; \
  } while (0)

/* ---- GCM parameters: both layouts in, the v2.40 one (SoftHSM2 takes only that) out */

struct gcm_in {
  CK_BYTE_PTR iv;
  CK_ULONG iv_bytes;
  int has_iv_bits;
  CK_ULONG iv_bits_value;
  CK_BYTE_PTR aad;
  CK_ULONG aad_bytes;
  CK_ULONG tag_bits;
};

static int read_gcm(CK_MECHANISM_PTR m, struct gcm_in *g) {
  if (m->pParameter == NULL) return 0;
  if (m->ulParameterLen == sizeof(CK_GCM_PARAMS)) {
    CK_GCM_PARAMS *p = m->pParameter;
    *g = (struct gcm_in){ p->pIv, p->ulIvLen, 1, p->ulIvBits, p->pAAD, p->ulAADLen, p->ulTagBits };
    return 1;
  }
  if (m->ulParameterLen == sizeof(struct gcm_params_v230)) {
    struct gcm_params_v230 *p = m->pParameter;
    *g = (struct gcm_in){ p->pIv, p->ulIvLen, 0, 0, p->pAAD, p->ulAADLen, p->ulTagBits };
    return 1;
  }
  return 0;
}

static CK_RV gcm_init(CK_RV (*init)(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE), CK_SESSION_HANDLE h, const struct gcm_in *g,
                      CK_BYTE_PTR iv, CK_ULONG iv_bytes, CK_OBJECT_HANDLE key) {
  CK_GCM_PARAMS out = { iv, iv_bytes, iv_bytes * 8, g->aad, g->aad_bytes, g->tag_bits };
  CK_MECHANISM m = { CKM_AES_GCM, &out, sizeof out };
  return init(h, &m, key);
}

static int all_zero(const CK_BYTE *b, CK_ULONG n) {
  for (CK_ULONG i = 0; i < n; i++)
    if (b[i] != 0) return 0;
  return 1;
}

/* ---- the overridden functions */

static CK_RV e_Initialize(CK_VOID_PTR args) {
  CK_C_INITIALIZE_ARGS forwarded = { NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL };
  char name[64] = "";
  const char *env = getenv("XKS_EMU_PROFILE");
  if (env != NULL) snprintf(name, sizeof name, "%s", env);
  pthread_mutex_lock(&lock);
  if (initialized) {
    pthread_mutex_unlock(&lock);
    return CKR_CRYPTOKI_ALREADY_INITIALIZED;
  }
  control_path[0] = '\0';
  env = getenv("XKS_EMU_CONTROL");
  if (env != NULL) snprintf(control_path, sizeof control_path, "%s", env);
  if (args != NULL) {
    CK_C_INITIALIZE_ARGS *a = args;
    forwarded = *a;
    forwarded.pReserved = NULL; /* SoftHSM2 refuses any */
    if (a->pReserved != NULL) {
      take_option(a->pReserved, "profile=", name, sizeof name);
      take_option(a->pReserved, "control=", control_path, sizeof control_path);
    }
  }
  profile = profile_named(name);
  if (profile == NONE) {
    pthread_mutex_unlock(&lock);
    fprintf(stderr, "vendor-emu: no profile (profile= in pReserved or XKS_EMU_PROFILE): cloudhsm, luna-fips, nshield or ha-flaky\n");
    return CKR_ARGUMENTS_BAD;
  }
  CK_RV rv = real->C_Initialize(&forwarded);
  if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) rv = CKR_OK; /* another user of SoftHSM2 in this process */
  if (rv == CKR_OK) {
    initialized = 1;
    memset(&control_seen, 0, sizeof control_seen);
    read_controls();
    if (!ctl.lost) broken = 0;
  }
  pthread_mutex_unlock(&lock);
  return rv;
}

static CK_RV e_Finalize(CK_VOID_PTR unused) {
  (void)unused;
  pthread_mutex_lock(&lock);
  if (!initialized) {
    pthread_mutex_unlock(&lock);
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  }
  for (CK_SESSION_HANDLE h = 1; h < MAX_SESSIONS; h++)
    if (sessions[h].open) real->C_CloseSession(h);
  memset(sessions, 0, sizeof sessions);
  app_logged_in = 0;
  initialized = 0;
  pthread_mutex_unlock(&lock);
  return CKR_OK;
}

static CK_RV e_GetInfo(CK_INFO_PTR info) {
  CK_RV rv = real->C_GetInfo(info);
  if (rv == CKR_OK) {
    char text[64];
    pad(info->manufacturerID, sizeof info->manufacturerID, "xks-proxy vendor emulation");
    snprintf(text, sizeof text, "emulated %s", PROFILE_NAMES[profile]);
    pad(info->libraryDescription, sizeof info->libraryDescription, text);
  }
  return rv;
}

static CK_RV e_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info) {
  CK_RV rv = real->C_GetTokenInfo(slot, info);
  if (rv == CKR_OK) {
    pad(info->manufacturerID, sizeof info->manufacturerID, "xks-proxy emulation");
    pad(info->model, sizeof info->model, PROFILE_NAMES[profile]);
  }
  return rv;
}

static CK_RV e_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify, CK_SESSION_HANDLE_PTR ph) {
  pthread_mutex_lock(&lock);
  CK_RV rv = initialized ? CKR_OK : CKR_CRYPTOKI_NOT_INITIALIZED;
  if (rv == CKR_OK && profile == HA_FLAKY) {
    read_controls();
    if (ctl.lost || broken) {
      broken = 1;
      rv = CKR_DEVICE_ERROR;
    }
  }
  pthread_mutex_unlock(&lock);
  if (rv != CKR_OK) return rv;
  if (profile == CLOUDHSM && notify != NULL) return CKR_ARGUMENTS_BAD;
  if (profile == CLOUDHSM && (flags & CKF_RW_SESSION) == 0) return CKR_FUNCTION_FAILED;
  rv = real->C_OpenSession(slot, flags, app, notify, ph);
  if (rv != CKR_OK) return rv;
  if (*ph == 0 || *ph >= MAX_SESSIONS) {
    real->C_CloseSession(*ph);
    return CKR_SESSION_COUNT;
  }
  pthread_mutex_lock(&lock);
  memset(&sessions[*ph], 0, sizeof sessions[*ph]);
  sessions[*ph].open = 1;
  sessions[*ph].slot = slot;
  pthread_mutex_unlock(&lock);
  return CKR_OK;
}

static CK_RV e_CloseSession(CK_SESSION_HANDLE h) {
  pthread_mutex_lock(&lock);
  struct emu_session *s = tracked(h);
  int dead = s != NULL && s->dead;
  if (s != NULL) forget(h);
  pthread_mutex_unlock(&lock);
  CK_RV rv = real->C_CloseSession(h);
  return dead ? CKR_SESSION_HANDLE_INVALID : rv;
}

static CK_RV e_CloseAllSessions(CK_SLOT_ID slot) {
  pthread_mutex_lock(&lock);
  for (CK_SESSION_HANDLE h = 1; h < MAX_SESSIONS; h++)
    if (sessions[h].open && sessions[h].slot == slot) forget(h);
  pthread_mutex_unlock(&lock);
  return real->C_CloseAllSessions(slot);
}

static CK_RV e_Login(CK_SESSION_HANDLE h, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG pin_bytes) {
  SESSION_CALL(h);
  if (profile == HA_FLAKY) {
    pthread_mutex_lock(&lock);
    long delay = ctl.login_delay_ms;
    pthread_mutex_unlock(&lock);
    struct timespec t = { delay / 1000, (delay % 1000) * 1000000L };
    while (delay > 0 && nanosleep(&t, &t) != 0) {
    }
    SESSION_CALL(h); /* the group may have been lost meanwhile */
  }
  if (profile == CLOUDHSM) {
    pthread_mutex_lock(&lock);
    int already = app_logged_in;
    pthread_mutex_unlock(&lock);
    if (already) return CKR_USER_ALREADY_LOGGED_IN;
    /* "<crypto user name>:<password>": the password is the SoftHSM2 token's PIN. */
    CK_UTF8CHAR_PTR colon = pin == NULL ? NULL : memchr(pin, ':', pin_bytes);
    if (colon == NULL || colon == pin || colon == pin + pin_bytes - 1) return CKR_PIN_INCORRECT;
    pin_bytes -= (CK_ULONG)(colon + 1 - pin);
    pin = colon + 1;
  }
  CK_RV rv = real->C_Login(h, user, pin, pin_bytes);
  if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
    pthread_mutex_lock(&lock);
    app_logged_in = 1;
    pthread_mutex_unlock(&lock);
  }
  return rv;
}

static CK_RV e_Logout(CK_SESSION_HANDLE h) {
  SESSION_CALL(h);
  CK_RV rv = real->C_Logout(h);
  pthread_mutex_lock(&lock);
  app_logged_in = 0;
  pthread_mutex_unlock(&lock);
  return rv;
}

static CK_RV e_EncryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key) {
  SESSION_CALL(h);
  CK_RV rv = flaky(h);
  if (rv != CKR_OK) return rv;
  end_op(h);
  if (m == NULL || m->mechanism != CKM_AES_GCM || !generates_iv()) return real->C_EncryptInit(h, m, key);
  struct gcm_in g;
  if (!read_gcm(m, &g)) return CKR_MECHANISM_PARAM_INVALID;
  struct emu_session op;
  memset(&op, 0, sizeof op);
  op.gcm_encrypting = 1;
  if (profile == LUNA_FIPS) {
    /* A caller IV is refused in FIPS mode; ulIvBits says how long an IV to generate (firmware 7.9.3). */
    if (g.iv_bytes != 0 || !g.has_iv_bits) return CKR_MECHANISM_PARAM_INVALID;
    pthread_mutex_lock(&lock);
    long older_firmware = ctl.iv_bytes == 16;
    pthread_mutex_unlock(&lock);
    if (!older_firmware && g.iv_bits_value != 96) return CKR_MECHANISM_PARAM_INVALID;
    op.gen_iv_bytes = older_firmware ? 16 : 12;
    op.append_iv = 1;
  } else {
    /* CloudHSM and nShield: pIv points to 12 zero bytes for the HSM to fill. */
    if (g.iv == NULL || g.iv_bytes != 12 || !all_zero(g.iv, 12)) return CKR_MECHANISM_PARAM_INVALID;
    op.gen_iv_bytes = 12;
    if (profile == NSHIELD) op.write_iv_to = g.iv;
  }
  if (getrandom(op.gen_iv, op.gen_iv_bytes, 0) != (ssize_t)op.gen_iv_bytes) return CKR_FUNCTION_FAILED;
  rv = gcm_init(real->C_EncryptInit, h, &g, op.gen_iv, op.gen_iv_bytes, key);
  if (rv != CKR_OK) return rv;
  if (profile == CLOUDHSM) memcpy(g.iv, op.gen_iv, 12);
  set_op(h, &op);
  return CKR_OK;
}

/* The IV leaves the HSM when the encryption completes: written to the caller's pIv (nShield) or appended. */
static void deliver_iv(const struct emu_session *op, CK_BYTE_PTR out, CK_ULONG_PTR out_bytes) {
  if (op->write_iv_to != NULL) memcpy(op->write_iv_to, op->gen_iv, op->gen_iv_bytes);
  if (op->append_iv) {
    memcpy(out + *out_bytes, op->gen_iv, op->gen_iv_bytes);
    *out_bytes += op->gen_iv_bytes;
  }
}

static CK_RV e_Encrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG data_bytes, CK_BYTE_PTR out, CK_ULONG_PTR out_bytes) {
  struct emu_session op;
  CK_RV rv = enter(h, &op);
  if (rv != CKR_OK) return rv;
  if ((rv = flaky(h)) != CKR_OK) return rv;
  if (!op.gcm_encrypting) return real->C_Encrypt(h, data, data_bytes, out, out_bytes);
  if (profile == CLOUDHSM && data_bytes > CLOUDHSM_GCM_MAX_DATA) {
    abort_op(h, 1);
    return CKR_DATA_LEN_RANGE;
  }
  CK_ULONG extra = op.append_iv ? op.gen_iv_bytes : 0;
  CK_ULONG needed = data_bytes + TAG_BYTES + extra;
  if (out == NULL || *out_bytes < needed) {
    *out_bytes = needed;
    return out == NULL ? CKR_OK : CKR_BUFFER_TOO_SMALL;
  }
  CK_ULONG n = *out_bytes - extra;
  /* Single-part on empty input too (SoftHSM2 itself refuses C_Encrypt there and needs C_EncryptFinal). */
  rv = data_bytes == 0 ? real->C_EncryptFinal(h, out, &n) : real->C_Encrypt(h, data, data_bytes, out, &n);
  if (rv == CKR_BUFFER_TOO_SMALL) return rv;
  if (rv == CKR_OK) deliver_iv(&op, out, &n);
  *out_bytes = n;
  end_op(h);
  return rv;
}

/* Entry to a multi-part call: refused on the GCM operation of a single-part-only HSM, which ends it. */
static CK_RV multipart(CK_SESSION_HANDLE h, int encrypting, struct emu_session *op) {
  CK_RV rv = enter(h, op);
  if (rv != CKR_OK) return rv;
  if ((encrypting ? op->gcm_encrypting : op->gcm_decrypting) && single_part_only()) {
    abort_op(h, encrypting);
    return CKR_MECHANISM_INVALID;
  }
  return CKR_OK;
}

static CK_RV e_EncryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR part, CK_ULONG part_bytes, CK_BYTE_PTR out, CK_ULONG_PTR out_bytes) {
  struct emu_session op;
  CK_RV rv = multipart(h, 1, &op);
  return rv != CKR_OK ? rv : real->C_EncryptUpdate(h, part, part_bytes, out, out_bytes);
}

static CK_RV e_EncryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR out_bytes) {
  struct emu_session op;
  CK_RV rv = multipart(h, 1, &op);
  if (rv != CKR_OK) return rv;
  rv = real->C_EncryptFinal(h, out, out_bytes);
  if (!op.gcm_encrypting || out == NULL || rv == CKR_BUFFER_TOO_SMALL) return rv;
  if (rv == CKR_OK) deliver_iv(&op, out, out_bytes);
  end_op(h);
  return rv;
}

static CK_RV e_DecryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE key) {
  SESSION_CALL(h);
  CK_RV rv = flaky(h);
  if (rv != CKR_OK) return rv;
  end_op(h);
  if (m == NULL || m->mechanism != CKM_AES_GCM || !generates_iv()) return real->C_DecryptInit(h, m, key);
  struct gcm_in g;
  if (!read_gcm(m, &g) || g.iv == NULL || g.iv_bytes == 0) return CKR_MECHANISM_PARAM_INVALID;
  /* Luna reads ulIvBits on decrypt too: it must match the IV given. */
  if (profile == LUNA_FIPS && (!g.has_iv_bits || g.iv_bits_value != g.iv_bytes * 8)) return CKR_MECHANISM_PARAM_INVALID;
  rv = gcm_init(real->C_DecryptInit, h, &g, g.iv, g.iv_bytes, key);
  if (rv != CKR_OK) return rv;
  struct emu_session op;
  memset(&op, 0, sizeof op);
  op.gcm_decrypting = 1;
  set_op(h, &op);
  return CKR_OK;
}

static CK_RV e_Decrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG in_bytes, CK_BYTE_PTR out, CK_ULONG_PTR out_bytes) {
  struct emu_session op;
  CK_RV rv = enter(h, &op);
  if (rv != CKR_OK) return rv;
  if ((rv = flaky(h)) != CKR_OK) return rv;
  if (!op.gcm_decrypting) return real->C_Decrypt(h, in, in_bytes, out, out_bytes);
  if (profile == CLOUDHSM && in_bytes > CLOUDHSM_GCM_MAX_DATA + TAG_BYTES) {
    abort_op(h, 0);
    return CKR_ENCRYPTED_DATA_LEN_RANGE;
  }
  rv = real->C_Decrypt(h, in, in_bytes, out, out_bytes);
  if (rv == CKR_BUFFER_TOO_SMALL || (rv == CKR_OK && out == NULL)) return rv;
  end_op(h);
  /* nShield reports a tag that does not verify as CKR_FUNCTION_FAILED (SoftHSM2: CKR_GENERAL_ERROR). */
  if (profile == NSHIELD && (rv == CKR_GENERAL_ERROR || rv == CKR_ENCRYPTED_DATA_INVALID)) return CKR_FUNCTION_FAILED;
  return rv;
}

static CK_RV e_DecryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR part, CK_ULONG part_bytes, CK_BYTE_PTR out, CK_ULONG_PTR out_bytes) {
  struct emu_session op;
  CK_RV rv = multipart(h, 0, &op);
  return rv != CKR_OK ? rv : real->C_DecryptUpdate(h, part, part_bytes, out, out_bytes);
}

static CK_RV e_DecryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR out_bytes) {
  struct emu_session op;
  CK_RV rv = multipart(h, 0, &op);
  return rv != CKR_OK ? rv : real->C_DecryptFinal(h, out, out_bytes);
}

/* Calls that only need a live session (the HA group reachable). */
static CK_RV e_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR info) {
  SESSION_CALL(h);
  return real->C_GetSessionInfo(h, info);
}
static CK_RV e_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n) {
  SESSION_CALL(h);
  return real->C_FindObjectsInit(h, t, n);
}
static CK_RV e_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR found, CK_ULONG max, CK_ULONG_PTR n) {
  SESSION_CALL(h);
  return real->C_FindObjects(h, found, max, n);
}
static CK_RV e_FindObjectsFinal(CK_SESSION_HANDLE h) {
  SESSION_CALL(h);
  return real->C_FindObjectsFinal(h);
}
static CK_RV e_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, CK_ULONG n) {
  SESSION_CALL(h);
  return real->C_GetAttributeValue(h, o, t, n);
}
static CK_RV e_GenerateKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR key) {
  SESSION_CALL(h);
  return real->C_GenerateKey(h, m, t, n, key);
}
static CK_RV e_CreateObject(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR o) {
  SESSION_CALL(h);
  return real->C_CreateObject(h, t, n, o);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
  if (list == NULL) return CKR_ARGUMENTS_BAD;
  pthread_mutex_lock(&lock);
  if (real == NULL) {
    void *lib = dlopen(EMU_TARGET, RTLD_NOW | RTLD_LOCAL);
    CK_C_GetFunctionList get = lib == NULL ? NULL : (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
    if (get == NULL || get(&real) != CKR_OK) {
      fprintf(stderr, "vendor-emu: cannot load %s: %s\n", EMU_TARGET, dlerror());
      real = NULL;
      pthread_mutex_unlock(&lock);
      return CKR_GENERAL_ERROR;
    }
    emu = *real;
    emu.C_Initialize = e_Initialize;
    emu.C_Finalize = e_Finalize;
    emu.C_GetInfo = e_GetInfo;
    emu.C_GetTokenInfo = e_GetTokenInfo;
    emu.C_OpenSession = e_OpenSession;
    emu.C_CloseSession = e_CloseSession;
    emu.C_CloseAllSessions = e_CloseAllSessions;
    emu.C_GetSessionInfo = e_GetSessionInfo;
    emu.C_Login = e_Login;
    emu.C_Logout = e_Logout;
    emu.C_FindObjectsInit = e_FindObjectsInit;
    emu.C_FindObjects = e_FindObjects;
    emu.C_FindObjectsFinal = e_FindObjectsFinal;
    emu.C_GetAttributeValue = e_GetAttributeValue;
    emu.C_GenerateKey = e_GenerateKey;
    emu.C_CreateObject = e_CreateObject;
    emu.C_EncryptInit = e_EncryptInit;
    emu.C_Encrypt = e_Encrypt;
    emu.C_EncryptUpdate = e_EncryptUpdate;
    emu.C_EncryptFinal = e_EncryptFinal;
    emu.C_DecryptInit = e_DecryptInit;
    emu.C_Decrypt = e_Decrypt;
    emu.C_DecryptUpdate = e_DecryptUpdate;
    emu.C_DecryptFinal = e_DecryptFinal;
  }
  pthread_mutex_unlock(&lock);
  *list = &emu;
  return CKR_OK;
}
