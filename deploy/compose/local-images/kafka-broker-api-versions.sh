#!/bin/bash
# The official image's healthcheck tool, at the path docker-compose.yml names.
exec java -Xmx64m -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
    -cp '/opt/kafka/libs/*' org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
