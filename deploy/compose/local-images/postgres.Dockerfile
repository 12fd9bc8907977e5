# Stands in for postgres:16 (Debian bookworm ships 15): Debian's server with an entrypoint that
# does what the official image's does for docker-compose.yml (POSTGRES_USER,
# POSTGRES_HOST_AUTH_METHOD, /docker-entrypoint-initdb.d/*.sql on first start).
ARG DEBIAN_IMAGE=orderflow-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# The postgres user gets the official image's uid and gid (999), which deploy/overlays/dev
# runs the server as.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql --shell /bin/bash postgres \
    && mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/no-main.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres /var/lib/postgresql/data /var/run/postgresql /docker-entrypoint-initdb.d
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
USER 999:999
VOLUME /var/lib/postgresql/data
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
