#!/usr/bin/env bash
# Quick start: installs what is missing (softhsm2, curl, npm packages), builds, creates a SoftHSM2
# token with demo keys and credentials in .demo/, prints a curl example, and runs the proxy.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
port=${XKS_DEMO_PORT:-8000}

bash "$root/softhsm/install-deps.sh"
[[ -d node_modules/pkcs11js ]] || npm ci
npm run --silent build
bash softhsm/setup-token.sh .demo "$port"

export SOFTHSM2_CONF="$root/.demo/softhsm2.conf"
akid=$(node -p "require('./.demo/secrets/primary.json').XksProxyAuthenticationCredential.AccessKeyId")
cat <<INFO

XKS proxy demo on http://127.0.0.1:$port/demo/kms/xks/v1  (metrics: http://127.0.0.1:$((port + 1))/metrics)
KMS console JSON (credential 1): .demo/secrets/primary.json    (credential 2: .demo/secrets/rotation.json)

Try it from another shell:

  curl -s --aws-sigv4 "aws:amz:us-east-1:kms-xks-proxy" \\
    --user "$akid:\$(cat .demo/secrets/primary.key)" \\
    -H 'Content-Type: application/json' \\
    -d '{"requestMetadata":{"kmsRequestId":"demo-1","kmsOperation":"KmsHealthCheck"}}' \\
    http://127.0.0.1:$port/demo/kms/xks/v1/health

INFO
exec node dist/src/main.js --config .demo/config.yaml
