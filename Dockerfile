# dmctl image: the CLI, the repository server (`dmctl server start`) and the datamover client contract
# (`dmctl datamover backup_files|restore_files|backup_stream|restore_stream`). Not built in CI here (no container
# engine on the build machines): see docs/cluster.md.
FROM node:20-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# node-gyp builds the zstd-napi addon (fast zstd for small blobs) from source.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY bin ./bin
COPY src ./src
COPY scripts ./scripts
RUN npx tsc -p . && node scripts/bundle-sdks.mjs && node scripts/bundle-oclif.mjs && node scripts/gen-manifest.mjs && npm prune --omit=dev

FROM node:20-slim
# mkfifo (coreutils) and sh are in the base image: the dump pod's pipe and status file need them.
ENV NODE_ENV=production
WORKDIR /opt/dmctl
COPY --from=build /src/package.json /src/oclif.manifest.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/bin ./bin
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/dist/vendor ./dist/vendor
RUN ln -s /opt/dmctl/bin/run.js /usr/local/bin/dmctl
# The base image's `node` user is uid/gid 1000, which the manifests' securityContext names.
USER 1000:1000
ENV HOME=/home/node
ENTRYPOINT ["dmctl"]
CMD ["--help"]
