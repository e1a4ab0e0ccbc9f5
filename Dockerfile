# The gateway image: the esbuild bundle and the three packages it loads at run time, nothing else.
# Built by `npx cdk deploy` (a container asset of infra/) or by hand: docker build -t holdfast .

FROM node:24-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# Scripts off: "prepare" would build before the sources are copied; the build runs below.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json ./
COPY scripts/build.mjs ./scripts/
COPY shared ./shared
COPY gateway ./gateway
COPY functions ./functions
RUN node scripts/build.mjs
# dist/runtime-package.json pins the bundle's externals to the lockfile's versions.
WORKDIR /out
RUN mkdir dist \
 && cp /src/dist/holdfast.js /src/dist/holdfast.js.map dist/ \
 && cp /src/dist/runtime-package.json package.json \
 && npm install --omit=dev --no-audit --no-fund --no-package-lock

FROM node:24-slim
# jemalloc instead of glibc's malloc: RSS that follows what the gateway holds (shared/runtime-tuning.ts).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libjemalloc2 \
 && ln -s "/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2" /usr/local/lib/libjemalloc.so.2 \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid, so that the EFS access point of the journal (infra/) can own the files as it.
RUN groupadd --system --gid 10001 holdfast \
 && useradd --system --uid 10001 --gid holdfast --home-dir /app --shell /usr/sbin/nologin holdfast \
 && mkdir -p /var/lib/holdfast \
 && chown holdfast:holdfast /var/lib/holdfast
WORKDIR /app
COPY --from=build --chown=root:root /out/ ./
ENV NODE_ENV=production \
    LD_PRELOAD=/usr/local/lib/libjemalloc.so.2 \
    MALLOC_CONF=background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0 \
    HOLDFAST_DATA_DIR=/var/lib/holdfast \
    HOLDFAST_LISTEN=0.0.0.0:10809 \
    HOLDFAST_ADMIN=0.0.0.0:10810 \
    HOLDFAST_LOG_FORMAT=json
USER holdfast
EXPOSE 10809 10810
# The admin port comes from HOLDFAST_ADMIN; infra/ gives ECS the same command (ECS ignores this line).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.HOLDFAST_ADMIN||':10810').split(':').pop()+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# --max-semi-space-size: see shared/runtime-tuning.ts (less old-generation heap).
# node as PID 1 receives SIGTERM itself: the gateway drains and syncs its journals within --shutdown-grace.
ENTRYPOINT ["node", "--enable-source-maps", "--max-semi-space-size=8", "dist/holdfast.js"]
CMD ["serve"]
