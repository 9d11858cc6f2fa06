# syntax=docker/dockerfile:1
# XKS proxy image, tagged with the package version (the tag the Helm chart runs by default):
#   docker build -t xks-proxy:0.1.0 .
# Demo image with SoftHSM2 (helm/examples/softhsm-demo.yaml):
#   docker build --build-arg WITH_SOFTHSM=true -t xks-proxy:0.1.0-softhsm .
#
# The PKCS#11 library of a real HSM is not in the image: mount the vendor's library (and its client
# config) and point hsm.modulePath (and hsm.environment) in the config at it.

# Both stages must use the same base: pkcs11js is a native addon compiled against this glibc and Node ABI.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
# node-gyp needs python3, make and g++ to compile pkcs11js; SoftHSM2 is the module its postinstall checks
# the built binary on (scripts/pkcs11js-gcm-probe.js), in this stage only.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ softhsm2 \
 && rm -rf /var/lib/apt/lists/*
# Use the headers shipped with the image's Node instead of downloading them.
ENV npm_config_nodedir=/usr/local
WORKDIR /src
# Lockfile first so the dependency layer is cached across source changes.
# patches/ and scripts/: the postinstall that patches pkcs11js (PKCS#11 v2.30 GCM parameters), builds it
# once and checks the binary. --ignore-scripts: this npm (10) does not read package.json's allowScripts,
# and would build pkcs11js unpatched first with the package's own install script.
COPY package.json package-lock.json ./
COPY patches ./patches
COPY scripts ./scripts
RUN npm ci --no-audit --no-fund --ignore-scripts \
 && npm run postinstall
# The product only: tsconfig.json compiles src/ (bench/, test/ and testbed/ are not in the context).
COPY tsconfig.json ./
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
ARG WITH_SOFTHSM=false
# Demo only: SoftHSM2 at /usr/lib/softhsm/libsofthsm2.so, its token directory writable by uid 1000.
RUN if [ "$WITH_SOFTHSM" = "true" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends softhsm2 \
      && rm -rf /var/lib/apt/lists/* \
      && chown -R 1000:1000 /var/lib/softhsm/tokens; \
    fi
ENV NODE_ENV=production
WORKDIR /app
# Runtime files only: production node_modules (with the compiled addon), compiled JS, package.json.
# Owned by root so the running user cannot modify the code.
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# The package's bin commands on PATH, so that `kubectl exec POD -- xks-admin key list` works.
RUN printf '#!/bin/sh\nexec node /app/dist/src/main.js "$@"\n' > /usr/local/bin/xks-proxy \
 && printf '#!/bin/sh\nexec node /app/dist/src/tools/admin.js "$@"\n' > /usr/local/bin/xks-admin \
 && chmod 755 /usr/local/bin/xks-proxy /usr/local/bin/xks-admin
# uid:gid 1000 is the image's "node" user; numeric so Kubernetes runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8443 9090
# Liveness of the ops listener (ops.port 9090 by default); Kubernetes uses its own probes instead.
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "require('http').get('http://127.0.0.1:9090/livez', (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"]
ENTRYPOINT ["node", "dist/src/main.js"]
CMD ["--config", "/etc/xks-proxy/config.yaml"]
