#!/usr/bin/env bash
# A local single-node Apache Cassandra 5.0 (the same CQL native protocol v4 as ScyllaDB, with
# Paxos LWT, LOCAL_SERIAL, TTLs and IF NOT EXISTS) for the tests of the CQL store backend.
#
#   scripts/cql-node.sh start     resolve Cassandra with Maven (cached), write a config, start the
#                                 node in the background, wait until CQL answers; prints the URI
#   scripts/cql-node.sh wait      wait (bounded) until the node answers CQL
#   scripts/cql-node.sh stop      stop the node this script started (its own PID only); bounded
#   scripts/cql-node.sh kill      kill -9 that node (for outage drills); its data stays
#   scripts/cql-node.sh restart   start the stopped/killed node again on the same data
#   scripts/cql-node.sh status    exit 0 when the node answers CQL
#   scripts/cql-node.sh uri       print 127.0.0.1:PORT
#   scripts/cql-node.sh available exit 0 when Maven and a JDK 11/17 are here (else say what is missing)
#
# Environment:
#   CQL_PORT         native (CQL) port, default 29042 (the storage port is the next one)
#   CQL_NODE_DIR     run directory (config, data, log, pid), default ${TMPDIR:-/tmp}/zonehost-cql-$CQL_PORT
#   CQL_CACHE        where the jars are kept, default <repo>/.cache/cql-node (git-ignored, reused)
#   CASSANDRA_VERSION  Maven version range or version, default [5.0,5.1)
#   CQL_HEAP         JVM heap, default 1G
#   CQL_START_TIMEOUT  seconds to wait for CQL, default 180
#   JAVA_HOME        a JDK 11 or 17 (Cassandra 5.0 runs on neither 21 nor 25); when unset, `java`
#                    on PATH, else the first JDK 17 or 11 under /usr/lib/jvm
#
# Only 127.0.0.1 is used. Everything needs Maven and a JDK; nothing is installed system-wide.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${CQL_PORT:-29042}"
STORAGE_PORT="$((PORT + 1))"
RUN_DIR="${CQL_NODE_DIR:-${TMPDIR:-/tmp}/zonehost-cql-$PORT}"
CACHE="${CQL_CACHE:-$ROOT/.cache/cql-node}"
VERSION_RANGE="${CASSANDRA_VERSION:-[5.0,5.1)}"
HEAP="${CQL_HEAP:-1G}"
START_TIMEOUT="${CQL_START_TIMEOUT:-180}"
PID_FILE="$RUN_DIR/cassandra.pid"

log() { printf '[cql-node] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# A JDK that Cassandra 5.0 supports (11 or 17).
pick_java() {
    local candidates=() j v
    [ -n "${JAVA_HOME:-}" ] && candidates+=("$JAVA_HOME/bin/java")
    command -v java >/dev/null 2>&1 && candidates+=("$(command -v java)")
    for j in /usr/lib/jvm/*17*/bin/java /usr/lib/jvm/*11*/bin/java; do
        [ -x "$j" ] && candidates+=("$j")
    done
    for j in "${candidates[@]}"; do
        v=$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
        case "$v" in
        11 | 17)
            echo "$j"
            return 0
            ;;
        esac
    done
    return 1
}

# Resolves cassandra-all and its runtime dependencies into $CACHE/lib (once).
resolve_jars() {
    if [ -f "$CACHE/lib/.complete" ]; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "Maven (mvn) is missing: it resolves Cassandra from Maven Central"
    mkdir -p "$CACHE"
    rm -rf "$CACHE/lib"
    cat >"$CACHE/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>zonehost.test</groupId>
  <artifactId>cql-node</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$VERSION_RANGE</version>
    </dependency>
  </dependencies>
</project>
EOF
    log "resolving org.apache.cassandra:cassandra-all $VERSION_RANGE with Maven into $CACHE/lib"
    local t0=$SECONDS
    if ! mvn -q -B -f "$CACHE/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$CACHE/lib" -DincludeScope=runtime >"$CACHE/mvn.log" 2>&1; then
        tail -30 "$CACHE/mvn.log" >&2
        die "Maven could not resolve cassandra-all $VERSION_RANGE (log: $CACHE/mvn.log)"
    fi
    ls "$CACHE"/lib/cassandra-all-*.jar >/dev/null 2>&1 || die "no cassandra-all jar in $CACHE/lib"
    touch "$CACHE/lib/.complete"
    log "resolved $(basename "$CACHE"/lib/cassandra-all-*.jar) and $(($(ls "$CACHE/lib" | wc -l) - 1)) dependencies in $((SECONDS - t0)) s"
}

write_config() {
    mkdir -p "$RUN_DIR"/{data,commitlog,saved_caches,hints,cdc_raw,logs,triggers}
    # A single node for tests on a 2-core machine: loopback only, small thread pools, no
    # snapshots on truncate/drop, no auth. The commit log is synced in groups of 10 ms before a
    # write is acknowledged (never periodically), so a kill -9 of the node loses no write
    # that was acknowledged to zonehost: the outage drill relies on it.
    cat >"$RUN_DIR/cassandra.yaml" <<EOF
cluster_name: zonehost-test
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $STORAGE_PORT
native_transport_port: $PORT
start_native_transport: true
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$STORAGE_PORT"
endpoint_snitch: SimpleSnitch
data_file_directories:
  - $RUN_DIR/data
commitlog_directory: $RUN_DIR/commitlog
saved_caches_directory: $RUN_DIR/saved_caches
hints_directory: $RUN_DIR/hints
cdc_raw_directory: $RUN_DIR/cdc_raw
commitlog_sync: group
commitlog_sync_group_window: 2ms
commitlog_segment_size: 8MiB
paxos_variant: v2
auto_snapshot: false
snapshot_before_compaction: false
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 2
concurrent_materialized_view_writes: 2
concurrent_compactors: 1
native_transport_max_threads: 32
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
key_cache_size: 16MiB
counter_cache_size: 0MiB
index_summary_capacity: 8MiB
read_request_timeout: 5000ms
write_request_timeout: 4000ms
cas_contention_timeout: 4000ms
request_timeout: 10000ms
hinted_handoff_enabled: false
dynamic_snitch: false
EOF
    cat >"$RUN_DIR/logback.xml" <<EOF
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$RUN_DIR/logs/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <filter class="ch.qos.logback.classic.filter.ThresholdFilter"><level>WARN</level></filter>
    <encoder><pattern>%-5level %date{ISO8601} %msg%n</pattern></encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="FILE"/>
    <appender-ref ref="STDOUT"/>
  </root>
</configuration>
EOF
}

node_pid() {
    [ -f "$PID_FILE" ] || return 1
    local pid
    pid=$(cat "$PID_FILE")
    # Ours only: a live process whose command line names our run directory's config.
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$RUN_DIR/cassandra.yaml"; then
        echo "$pid"
        return 0
    fi
    return 1
}

# Sends a CQL v4 OPTIONS frame and expects a SUPPORTED response (opcode 0x06).
cql_answers() {
    local reply
    reply=$(timeout 3 bash -c '
        exec 3<>/dev/tcp/127.0.0.1/'"$PORT"' || exit 1
        printf "\x04\x00\x00\x01\x05\x00\x00\x00\x00" >&3
        head -c 5 <&3 | od -An -tx1' 2>/dev/null) || return 1
    # Response header: version 0x84, flags, stream 00 01, opcode 06.
    [ "$(echo "$reply" | tr -d ' \n')" != "" ] && [ "$(echo "$reply" | awk '{print $1 $5}')" = "8406" ]
}

wait_ready() {
    local t0=$SECONDS pid
    while ! cql_answers; do
        if ! pid=$(node_pid); then
            tail -40 "$RUN_DIR/logs/system.log" >&2 2>/dev/null || true
            tail -20 "$RUN_DIR/logs/stdout.log" >&2 2>/dev/null || true
            die "the node exited before CQL answered (logs in $RUN_DIR/logs)"
        fi
        if [ $((SECONDS - t0)) -ge "$START_TIMEOUT" ]; then
            tail -40 "$RUN_DIR/logs/system.log" >&2 2>/dev/null || true
            die "CQL did not answer on 127.0.0.1:$PORT within $START_TIMEOUT s"
        fi
        sleep 0.5
    done
}

launch() {
    local java jdk_version t0
    java=$(pick_java) || die "no JDK 11 or 17 found (set JAVA_HOME); Cassandra 5.0 needs one of them"
    jdk_version=$("$java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    if node_pid >/dev/null; then
        log "already running (pid $(node_pid)) on 127.0.0.1:$PORT"
        return 0
    fi
    if cql_answers; then
        die "something else already answers CQL on 127.0.0.1:$PORT (set CQL_PORT)"
    fi
    t0=$(date +%s%3N)
    # JVM options: Cassandra's own Java 17 module opens (jvm17-server.options) and a heap and
    # GC sized for a 2-core test machine.
    local opts=(
        -Xms"$HEAP" -Xmx"$HEAP" -Xss256k
        -XX:+UseG1GC -XX:MaxGCPauseMillis=200 -XX:ParallelGCThreads=2 -XX:ConcGCThreads=1
        -XX:+HeapDumpOnOutOfMemoryError -XX:HeapDumpPath="$RUN_DIR/logs"
        -XX:+PerfDisableSharedMem -XX:+ExitOnOutOfMemoryError -ea -da:net.openhft...
        -Djava.net.preferIPv4Stack=true
        -Dcassandra.config="file://$RUN_DIR/cassandra.yaml"
        -Dcassandra.storagedir="$RUN_DIR"
        -Dcassandra.logdir="$RUN_DIR/logs"
        -Dcassandra.triggers_dir="$RUN_DIR/triggers"
        -Dlogback.configurationFile="$RUN_DIR/logback.xml"
        -Dcassandra-foreground=yes
        -Dcassandra.available_processors=2
        -Dcassandra.skip_wait_for_gossip_to_settle=0
        -Dcassandra.ring_delay_ms=1000
        -Dcassandra.superuser_setup_delay_ms=0
        -Djdk.attach.allowAttachSelf=true
        -Dio.netty.tryReflectionSetAccessible=true
        -Dio.netty.allocator.useCacheForAllThreads=true
        -Dio.netty.allocator.maxOrder=11
    )
    if [ "$jdk_version" = 17 ]; then
        opts+=(
            --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
            --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
            --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
            --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
            --add-exports java.sql/java.sql=ALL-UNNAMED
            --add-exports java.base/java.lang.ref=ALL-UNNAMED
            --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
            --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
            --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
            --add-opens java.base/java.lang.module=ALL-UNNAMED
            --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
            --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
            --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
            --add-opens java.base/jdk.internal.math=ALL-UNNAMED
            --add-opens java.base/jdk.internal.module=ALL-UNNAMED
            --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
            --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
            --add-opens java.base/sun.nio.ch=ALL-UNNAMED
            --add-opens java.base/java.io=ALL-UNNAMED
            --add-opens java.base/java.lang.reflect=ALL-UNNAMED
            --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
            --add-opens java.base/java.lang=ALL-UNNAMED
            --add-opens java.base/java.util=ALL-UNNAMED
        )
    fi
    setsid "$java" "${opts[@]}" -cp "$CACHE/lib/*" org.apache.cassandra.service.CassandraDaemon \
        >"$RUN_DIR/logs/stdout.log" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    log "started Cassandra $(basename "$CACHE"/lib/cassandra-all-*.jar .jar | sed 's/cassandra-all-//') (pid $!, Java $jdk_version, heap $HEAP) in $RUN_DIR"
    wait_ready
    log "CQL answers on 127.0.0.1:$PORT after $(awk -v ms=$(($(date +%s%3N) - t0)) 'BEGIN{printf "%.1f", ms/1000}') s"
}

stop_node() {
    local sig="$1" pid i
    if ! pid=$(node_pid); then
        log "no node of ours is running in $RUN_DIR"
        rm -f "$PID_FILE"
        return 0
    fi
    kill "-$sig" "$pid" 2>/dev/null || true
    for i in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop in 30 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$PID_FILE"
    log "stopped (SIG$sig) pid $pid"
}

case "${1:-}" in
start)
    resolve_jars
    rm -rf "$RUN_DIR"
    write_config
    launch
    echo "127.0.0.1:$PORT"
    ;;
restart)
    resolve_jars
    [ -f "$RUN_DIR/cassandra.yaml" ] || die "no node was started in $RUN_DIR"
    launch
    echo "127.0.0.1:$PORT"
    ;;
wait)
    wait_ready
    ;;
stop)
    stop_node TERM
    [ "${CQL_KEEP_DATA:-0}" = 1 ] || rm -rf "$RUN_DIR"
    ;;
kill)
    stop_node KILL
    ;;
status)
    cql_answers
    ;;
uri)
    echo "127.0.0.1:$PORT"
    ;;
available)
    command -v mvn >/dev/null 2>&1 || {
        log "Maven (mvn) is missing"
        exit 1
    }
    pick_java >/dev/null || {
        log "no JDK 11 or 17 (set JAVA_HOME)"
        exit 1
    }
    ;;
*)
    sed -n '2,26p' "$0" >&2
    exit 2
    ;;
esac
