#!/usr/bin/env bash
# Start a real Elasticsearch 8 node for the tests, in the background.
#   tests/es/start-es.sh WORKDIR HTTP_PORT TRANSPORT_PORT [WRITE_QUEUE_SIZE]
# Builds the runner with Maven (downloads are cached in Maven's local repository; the build goes to
# $LOGLINES_ES_BUILD, default WORKDIR/build, so several nodes can share one), lays out the
# node's home under WORKDIR (kept: starting again on the same WORKDIR restarts the same node
# with its data), starts it as an unprivileged user when run as root (Elasticsearch refuses
# root), writes WORKDIR/es.pid and waits until the cluster answers.
# Stop it with: kill "$(cat WORKDIR/es.pid)".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$1"; http_port="$2"; transport_port="$3"; queue="${4:-0}"
mkdir -p "$work"
build="${LOGLINES_ES_BUILD:-$work/build}"
fail() { echo "loglines-es: $*" >&2; exit 1; }
if [ ! -f "$build/ready" ]; then
  # The node's jars are copied into the build directory: Maven's local repository may sit under a
  # home directory the unprivileged node user cannot enter (a stock root home is mode 0700).
  rm -rf "$build/lib" "$build/netty4" "$build/classes"
  mkdir -p "$build/lib" "$build/netty4"
  (cd "$here" && mvn -B -q -DskipTests compile dependency:build-classpath \
      -Dmdep.outputFile="$build/classpath.txt" \
      dependency:copy-dependencies -DoutputDirectory="$build/lib" >"$build/maven.log" 2>&1) \
    || { tail -30 "$build/maven.log" >&2; fail "the Maven build of the test node failed (see $build/maven.log)"; }
  (cd "$here/netty4" && mvn -B -q dependency:copy-dependencies \
      -DoutputDirectory="$build/netty4" >>"$build/maven.log" 2>&1) \
    || { tail -30 "$build/maven.log" >&2; fail "the Maven build of the netty4 module failed (see $build/maven.log)"; }
  wanted=$(tr ':' '\n' <"$build/classpath.txt" | grep -c '\.jar$' || true)
  copied=$(find "$build/lib" -name '*.jar' | wc -l)
  [ "$wanted" = "$copied" ] || fail "expected $wanted jars in $build/lib, found $copied (two jars with one file name?)"
  cp -r "$here/target/classes" "$build/classes"
  touch "$build/ready"
fi
home="$work/home"
mkdir -p "$home/config" "$home/plugins" "$home/modules/transport-netty4" "$home/snapshots"
touch "$home/config/elasticsearch.yml"
cp "$build"/netty4/*.jar "$home/modules/transport-netty4/"
cat >"$home/modules/transport-netty4/plugin-descriptor.properties" <<PROPS
description=Netty 4 based transport implementation
version=8.14.3
name=transport-netty4
classname=org.elasticsearch.transport.netty4.Netty4Plugin
java.version=17
elasticsearch.version=8.14.3
extended.plugins=
has.native.controller=false
PROPS
run=()
if [ "$(id -u)" = 0 ]; then
  id loglines-es >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin loglines-es
  chown -R loglines-es "$home" "$work"
  chmod -R a+rX "$build"
  run=(setpriv --reuid loglines-es --regid loglines-es --clear-groups)
fi
java_bin="${JAVA_HOME:+$JAVA_HOME/bin/}java"
nohup "${run[@]}" "$java_bin" -Xms"${LOGLINES_ES_HEAP:-1g}" -Xmx"${LOGLINES_ES_HEAP:-1g}" \
  --module-path "$build/lib" --add-modules ALL-MODULE-PATH \
  -cp "$build/classes" loglines.testes.EsRunner "$home" "$http_port" "$transport_port" "$queue" \
  >"$work/es.log" 2>&1 &
echo $! >"$work/es.pid"
node_error() {  # the node's own error: its first Java exception, else its first error line, else its last line
  grep -m1 -E '^([A-Za-z_][A-Za-z0-9_]*\.)+[A-Za-z0-9_]*(Exception|Error):' "$work/es.log" 2>/dev/null \
    || grep -m1 -E 'Exception|Error|error' "$work/es.log" 2>/dev/null || tail -1 "$work/es.log" 2>/dev/null
}
for _ in $(seq 1 180); do
  if [ -n "${LOGLINES_ES_SEEDS:-}" ]; then  # a node of a cluster: up once it answers at all
    if curl -s -o /dev/null "http://127.0.0.1:$http_port/" 2>/dev/null; then
      echo "http://127.0.0.1:$http_port"
      exit 0
    fi
  elif curl -sf "http://127.0.0.1:$http_port/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1; then
    echo "http://127.0.0.1:$http_port"
    exit 0
  fi
  if ! kill -0 "$(cat "$work/es.pid")" 2>/dev/null; then
    tail -40 "$work/es.log" >&2
    fail "the node exited at start: $(node_error)"
  fi
  sleep 1
done
tail -40 "$work/es.log" >&2
kill "$(cat "$work/es.pid")" 2>/dev/null || true
fail "the node did not answer within 180 s: $(node_error)"
