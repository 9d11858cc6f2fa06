#!/usr/bin/env bash
# Creates a SoftHSM2 token in DIR with demo keys, a health-check key, two SigV4 credentials
# (the second shows rotation) and a proxy config (DIR/config.yaml). Safe to re-run: an existing
# setup in DIR is kept.
#
# usage: softhsm/setup-token.sh DIR [PORT]
set -euo pipefail

dir=${1:?usage: setup-token.sh DIR [PORT]}
port=${2:-8000}
root=$(cd "$(dirname "$0")/.." && pwd)
module=${SOFTHSM2_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
token_label=${XKS_TOKEN_LABEL:-xks-demo}
admin=(node "$root/dist/src/tools/admin.js")

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [[ -f "$dir/config.yaml" ]]; then
  echo "setup-token: $dir/config.yaml exists; keeping it" >&2
  exit 0
fi
[[ -f "$module" ]] || { echo "setup-token: SoftHSM2 module not found at $module (apt-get install softhsm2)" >&2; exit 1; }
[[ -f "$root/dist/src/tools/admin.js" ]] || { echo "setup-token: run 'npm run build' first" >&2; exit 1; }

umask 077
mkdir -p "$dir/tokens" "$dir/secrets"
cat > "$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF="$dir/softhsm2.conf"

random() { node -e "process.stdout.write(require('crypto').randomBytes($1).toString('hex'))"; }
pin=$(random 12)
printf '%s' "$pin" > "$dir/secrets/hsm-pin"
softhsm2-util --init-token --free --label "$token_label" --pin "$pin" --so-pin "$(random 12)" >/dev/null

export XKS_HSM_PIN="$pin"
for label in xks-demo-key-1 xks-demo-key-2 xks-health-check; do
  "${admin[@]}" hsm generate-key --module "$module" --token "$token_label" --label "$label" >/dev/null
done

credential() {
  "${admin[@]}" new-credential --prefix "$1" > "$dir/secrets/$2.json"
  node -e "const c=require('$dir/secrets/$2.json').XksProxyAuthenticationCredential; require('fs').writeFileSync('$dir/secrets/$2.key', c.RawSecretAccessKey); process.stdout.write(c.AccessKeyId)"
}
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
akid1=$(credential /demo primary)
akid2=$(credential /demo rotation)

cat > "$dir/config.yaml" <<YAML
# Demo configuration written by softhsm/setup-token.sh. See README "Configuration reference".
server:
  host: 127.0.0.1
  port: $port
  insecurePlainHttp: true   # demo only: production terminates TLS here (server.tls) or upstream
ops:
  host: 127.0.0.1
  port: $((port + 1))
hsm:
  modulePath: $module
  environment: { SOFTHSM2_CONF: $dir/softhsm2.conf }
  tokenLabel: $token_label
  pin: { file: $dir/secrets/hsm-pin }
  sessionPoolSize: 32
  healthKeyLabel: xks-health-check
keyStores:
  - name: demo
    pathPrefix: /demo
    credentials:
      - accessKeyId: $akid1
        secretAccessKey: { file: $dir/secrets/primary.key }
        createdAt: $now
      - accessKeyId: $akid2
        secretAccessKey: { file: $dir/secrets/rotation.key }
        createdAt: $now
    groups: [demo-keys]
groups:
  - name: demo-keys
    policy:
      rules:
        # Deny wins; a request that no allow rule matches is denied.
        - id: deny-untrusted-account
          effect: deny
          principalAccounts: ["999999999999"]
        - id: allow-demo
          effect: allow
    keys:
      - id: demo-key-1
        label: xks-demo-key-1
      - id: demo-key-2
        label: xks-demo-key-2
        usage: [ENCRYPT]
YAML
echo "setup-token: token '$token_label' with keys xks-demo-key-1, xks-demo-key-2, xks-health-check in $dir" >&2
