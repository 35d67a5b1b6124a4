#!/usr/bin/env bash
# The broker tests against RabbitMQ 4.x as Debian ships it (trixie: 4.0), on this machine: a
# trixie chroot built once and cached, a private 4.x node on its own port, and the suite pointed
# at it with AMQP_URL. `rabbitmqctl` on the tests' PATH is a wrapper that reaches that node.
#
#   bash .ci/rabbitmq4.sh            # the api and topology tests against 4.x
#   bash .ci/rabbitmq4.sh FILTER     # only the tests matching FILTER
#   bash .ci/rabbitmq4.sh --prepare  # only build the chroot (CI does it while it compiles)
# With RABBITMQ4_API_TESTS and RABBITMQ4_ALARM_TESTS (paths to built test binaries), it runs those
# instead of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/polyai-relay"
ROOT="$CACHE/trixie-rabbitmq"
PORT="${RABBITMQ4_PORT:-5682}"
NODE="relay4x@localhost"
RUN="$(mktemp -d /tmp/rabbitmq4.XXXXXX)"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

build_chroot() {
  command -v debootstrap >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  rm -rf "$ROOT.partial"
  debootstrap --variant=minbase trixie "$ROOT.partial" "$MIRROR"
  # Installing must not try to start a service inside the chroot.
  printf '#!/bin/sh\nexit 101\n' > "$ROOT.partial/usr/sbin/policy-rc.d"
  chmod +x "$ROOT.partial/usr/sbin/policy-rc.d"
  chroot "$ROOT.partial" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
  mv "$ROOT.partial" "$ROOT"
}

[ -x "$ROOT/usr/lib/rabbitmq/bin/rabbitmq-server" ] || build_chroot
echo "RabbitMQ in the chroot: $(chroot "$ROOT" dpkg-query -W -f='${Version}' rabbitmq-server)"
[ "${1:-}" = "--prepare" ] && exit 0

mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
mkdir -p "$ROOT$RUN/home"
head -c 24 /dev/urandom | base64 | tr -dc 'A-Z' > "$ROOT$RUN/home/.erlang.cookie"
chmod 400 "$ROOT$RUN/home/.erlang.cookie"
cat > "$ROOT$RUN/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$PORT
loopback_users = none
log.console = false
# The deprecated features a client can use, forbidden: a test that relies on one fails.
deprecated_features.permit.global_qos = false
deprecated_features.permit.transient_nonexcl_queues = false
CONF
echo '[].' > "$ROOT$RUN/enabled_plugins"
in_chroot() {
  chroot "$ROOT" env HOME="$RUN/home" RABBITMQ_NODENAME="$NODE" RABBITMQ_CONFIG_FILE="$RUN/rabbitmq" \
    RABBITMQ_MNESIA_BASE="$RUN/mnesia" RABBITMQ_LOG_BASE="$RUN/log" RABBITMQ_ENABLED_PLUGINS_FILE="$RUN/enabled_plugins" \
    RABBITMQ_DIST_PORT="$((PORT + 20000))" "$@"
}
stop() {
  in_chroot /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODE" shutdown >/dev/null 2>&1 || true
  umount "$ROOT/proc" 2>/dev/null || true
  rm -rf "$ROOT$RUN" "$RUN"
}
trap stop EXIT
in_chroot /usr/lib/rabbitmq/bin/rabbitmq-server > "$RUN/server.out" 2>&1 &
for _ in $(seq 1 120); do
  in_chroot /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODE" await_startup >/dev/null 2>&1 && break
  sleep 1
done
in_chroot /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODE" await_startup >/dev/null

# Tests that call rabbitmqctl (policies, the memory alarm) reach this node.
mkdir -p "$RUN/bin"
cat > "$RUN/bin/rabbitmqctl" <<WRAP
#!/bin/sh
exec chroot "$ROOT" env HOME="$RUN/home" /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODE" "\$@"
WRAP
chmod +x "$RUN/bin/rabbitmqctl"

export AMQP_URL="amqp://guest:guest@127.0.0.1:$PORT/%2f"
export PATH="$RUN/bin:$PATH"
echo "RabbitMQ $(rabbitmqctl version) at $AMQP_URL"
status=0
# .ci/run hands over the binaries it built (a `cargo test` beside this one holds the build lock).
if [ -n "${RABBITMQ4_API_TESTS:-}" ] && [ -n "${RABBITMQ4_ALARM_TESTS:-}" ]; then
  "$RABBITMQ4_API_TESTS" ${1:-} 2>&1 | tee "$RUN/results" || status=1
  "$RABBITMQ4_ALARM_TESTS" 2>&1 | tee -a "$RUN/results" || status=1
else
  cargo test --test api ${1:-} 2>&1 | tee "$RUN/results" || status=1
  cargo test --test alarm 2>&1 | tee -a "$RUN/results" || status=1
fi
grep '^test result:' "$RUN/results"
exit "$status"
