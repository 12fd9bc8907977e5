#!/bin/bash
# The broker as apache/kafka runs it: every KAFKA_* variable becomes a server.properties line
# (KAFKA_NODE_ID -> node.id; "__" stands for "_" and "___" for "-"), the log directory is
# formatted on first start, then the broker runs in the foreground.
set -euo pipefail
config=/opt/kafka/config/server.properties
: >"$config"
while IFS='=' read -r name value; do
    case "$name" in
        KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JVM_PERFORMANCE_OPTS) continue ;;
        KAFKA_*) ;;
        *) continue ;;
    esac
    key=$(printf '%s' "${name#KAFKA_}" | tr '[:upper:]' '[:lower:]' \
        | sed -e 's/___/-/g' -e 's/__/\x01/g' -e 's/_/./g' -e 's/\x01/_/g')
    printf '%s=%s\n' "$key" "$value" >>"$config"
done < <(env)
grep -q '^log\.dirs=' "$config" || echo "log.dirs=/var/lib/kafka/data" >>"$config"
log_dir=$(sed -n 's/^log\.dirs=//p' "$config" | cut -d, -f1)
java_opts=(-Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties -cp '/opt/kafka/libs/*')
if [ ! -f "$log_dir/meta.properties" ]; then
    java "${java_opts[@]}" kafka.tools.StorageTool format --ignore-formatted \
        -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" -c "$config"
fi
# shellcheck disable=SC2086
exec java $KAFKA_HEAP_OPTS ${KAFKA_OPTS:-} "${java_opts[@]}" kafka.Kafka "$config"
