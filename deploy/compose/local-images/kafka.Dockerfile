# Stands in for apache/kafka: a Debian JRE, the broker's jars as scripts/kafka/pom.xml resolves
# them from Maven Central (the build context's libs/), and an entrypoint that turns KAFKA_*
# variables into server.properties as the official image does.
ARG DEBIAN_IMAGE=orderflow-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 1000 --home-dir /var/lib/kafka appuser \
    && install -d -o appuser /var/lib/kafka/data /opt/kafka/config
COPY libs /opt/kafka/libs
COPY log4j2.properties /opt/kafka/config/log4j2.properties
COPY kafka-entrypoint.sh /opt/kafka/bin/kafka-entrypoint.sh
COPY kafka-broker-api-versions.sh /opt/kafka/bin/kafka-broker-api-versions.sh
USER appuser
ENV KAFKA_HEAP_OPTS="-Xms256m -Xmx512m"
VOLUME /var/lib/kafka/data
ENTRYPOINT ["/opt/kafka/bin/kafka-entrypoint.sh"]
