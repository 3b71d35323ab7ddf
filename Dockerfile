# syntax=docker/dockerfile:1
# The stripe-credits service image. `pulumi up` (infra/index.ts) builds it on the Docker host; the
# stages mirror what infra/test/image.test.ts checks on a bare machine:
#   build      all dependencies, TypeScript compiled to dist/ (with the SQL migrations)
#   prod-deps  package.json "dependencies" only
#   runtime    Node 24 LTS, tini as PID 1, the non-root `node` user, dist/ + production node_modules
# No secret is part of any layer: secrets reach containers as files at run time (secrets.example/),
# and .dockerignore keeps local secret and state files out of the build context.

ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY service ./service
COPY scripts ./scripts
# The local Stripe's object builders and signing, which the operator scripts (send-test-event) use.
COPY localStripe ./localStripe
RUN npm run build

FROM ${NODE_IMAGE} AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
# tini forwards SIGTERM to Node (which drains in-flight requests) and reaps zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000
WORKDIR /app
# Owned by root and not writable by the service: the code cannot be changed by the process running it.
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /build/dist ./dist
COPY package.json ./
# uid 1000 in the official Node images; infra/secretFiles.ts gives the secret files to this uid.
USER node
EXPOSE 3000
# Healthy means ready (answering, database reachable); the same command as infra/serviceImage.ts.
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--"]
# A young generation of at most 2 × 8 MB: under load the default (16 MB halves) grew RSS from 72 to 109–118 MB
# for no measurable throughput (npm run bench reads these flags from here).
CMD ["node", "--max-semi-space-size=8", "dist/service/main.js"]
