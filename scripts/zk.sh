#!/usr/bin/env bash
# scripts/zk.sh: run Debian's ZooKeeper 3.8 locally for zkmw development and tests.
#
# Usage: scripts/zk.sh start|stop|status
#        scripts/zk.sh ensemble-start|ensemble-stop|ensemble-status
#        scripts/zk.sh node-start N|node-stop N        (N = 1..3, one ensemble node)
#        scripts/zk.sh tls-start|tls-stop|tls-status
#        scripts/zk.sh stop-all       stop every server this script started in the files folder
#        scripts/zk.sh procs          list the processes whose command line names the files folder
#        scripts/zk.sh free-ports N   print N free ports (see cmd_free_ports)
#        scripts/zk.sh version PORT   print the version of the server on 127.0.0.1:PORT
#        scripts/zk.sh later-jars DIR download Debian 13's ZooKeeper jars into DIR and print
#                                     the ZKMW_ZK_JARS value that runs them (see cmd_later_jars)
#
# Files folder: ${ZKMW_ZK_DIR:-the git-ignored .zk/ of this checkout}. Everything of every
# server (config, data, log, pid file) lives under it; the tests and scripts/test.sh give
# each of their servers a private folder (and free ports), so their runs do not meet.
# Standalone server: 127.0.0.1:${ZKMW_ZK_PORT:-2181}, files in standalone-<port>/.
# Ensemble: 3 nodes on 127.0.0.1, client ports ${ZKMW_ENSEMBLE_PORTS:-2281,2282,2283},
# peer ports ${ZKMW_ENSEMBLE_PEER_PORTS:-2881,2882,2883} and election ports
# ${ZKMW_ENSEMBLE_ELECTION_PORTS:-3881,3882,3883} (node N: the Nth of each), files in ensemble-<N>/.
# TLS server: one standalone server with a plain client port 127.0.0.1:${ZKMW_TLS_PLAIN_PORT:-2191}
# and a secure (TLS) client port 127.0.0.1:${ZKMW_TLS_PORT:-2192}, asking clients for a
# certificate as ${ZKMW_TLS_CLIENT_AUTH:-want} says (none|want|need); files in tls/server-<port>/.
# Its throwaway certificates are made once in tls/ (see tls_make_certs): clients use
# ca.pem, client.pem + client-key.pem (PKCS#8; client-key-rsa.pem is the same key as PKCS#1),
# and, for negative tests, other-ca.pem and other-client.pem + other-client-key.pem from an
# unrelated CA. tls-stop stops every TLS server this script started, whatever its ports.
# Another ZooKeeper build: ZKMW_ZK_JARS, a colon-separated list of its jars (its
# zookeeper.jar and zookeeper-jute.jar), goes ahead of Debian's on every server's classpath,
# so its classes are the ones that run (see README, "Another ZooKeeper release").
# Installs the Debian package `zookeeper` when it is missing.
set -euo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ZK_ROOT="${ZKMW_ZK_DIR:-$PROJECT/.zk}"
[[ "$ZK_ROOT" == /* ]] || ZK_ROOT="$PWD/$ZK_ROOT"  # absolute: pid checks match command lines
ZK_ROOT="${ZK_ROOT%/}"
STANDALONE_PORT="${ZKMW_ZK_PORT:-2181}"
ENSEMBLE_PORTS="${ZKMW_ENSEMBLE_PORTS:-2281,2282,2283}"
PEER_PORTS="${ZKMW_ENSEMBLE_PEER_PORTS:-2881,2882,2883}"          # node N: the Nth (quorum)
ELECTION_PORTS="${ZKMW_ENSEMBLE_ELECTION_PORTS:-3881,3882,3883}"  # node N: the Nth (election)
# Ports handed out by free-ports, and by the tests' free_port(): 20000-31999, below
# the kernel's ephemeral range. A test process holds a flock on PORT_LOCKS/<port> for
# each port it took, until it exits; free-ports skips those.
PORT_LOCKS="${TMPDIR:-/tmp}/zkmw-ports"
START_TIMEOUT="${ZKMW_ZK_START_TIMEOUT:-60}"  # seconds to wait for a server to serve
STOP_TIMEOUT=15      # seconds between TERM and KILL

# Narrow classpath: only one SLF4J binding (log4j 1.2), so the server log reaches
# stdout; zookeeper.jar's manifest pulls in the rest of its dependencies.
ZK_CLASSPATH="/etc/zookeeper/conf:${ZKMW_ZK_JARS:+$ZKMW_ZK_JARS:}/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar"

die() { echo "zk.sh: error: $*" >&2; exit 1; }
say() { echo "zk.sh: $*"; }

# Install Debian's zookeeper (and thereby java) when missing.
ensure_zookeeper() {
  local status
  status="$(dpkg-query -W -f='${Status}' zookeeper 2>/dev/null || true)"
  if [ "$status" = "install ok installed" ] && [ -r /usr/share/java/zookeeper.jar ] \
     && command -v java >/dev/null; then
    return 0
  fi
  command -v apt-get >/dev/null || die "Debian package 'zookeeper' is missing and apt-get is not available"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "Debian package 'zookeeper' is missing; run as root or install sudo (or: apt-get install zookeeper)"
    sudo=(sudo)
  fi
  say "installing Debian package zookeeper"
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y zookeeper
  command -v java >/dev/null || die "java not found after installing zookeeper"
}

# Send a four-letter-word command to 127.0.0.1:PORT and print the reply (empty on failure).
# shellcheck disable=SC2016  # $1/$2 expand in the inner bash, on purpose
four_lw() {
  timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "%s" "$2" >&3 && cat <&3' \
    _ "$1" "$2" 2>/dev/null || true
}

is_imok() { [ "$(four_lw "$1" ruok)" = "imok" ]; }

# True when something accepts TCP connections on 127.0.0.1:PORT.
# shellcheck disable=SC2016
port_busy() { timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

# Print "leader", "follower" or "standalone" when the server on PORT serves requests.
server_mode() { four_lw "$1" srvr | sed -n 's/^Mode: //p'; }

# True when process PID exists and is not a zombie.
running() {
  kill -0 "$1" 2>/dev/null || return 1
  [ "$(sed -n 's/^.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# True when the pid file names a live ZooKeeper process started with this zoo.cfg.
pid_alive() { # pidfile cfg
  local pid cmdline
  [ -f "$1" ] || return 1
  pid="$(cat "$1")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  running "$pid" || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmdline" == *"QuorumPeerMain $2 "* ]]
}

# Write the settings common to standalone and ensemble configs.
write_common_cfg() { # cfg datadir port
  cat >"$1" <<EOF
# Generated by scripts/zk.sh; rewritten on every start.
tickTime=1000
minSessionTimeout=2000
maxSessionTimeout=20000
dataDir=$2
clientPort=$3
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=*
maxClientCnxns=0
snapCount=100000
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
}

# Launch QuorumPeerMain in the background for the folder DIR (zoo.cfg already written).
launch() { # dir
  launch_with "$1" "$ZK_CLASSPATH"
}

# Like launch, with another classpath and extra JVM options (-D...).
launch_with() { # dir classpath [jvm-option...]
  local dir="$1" classpath="$2"
  shift 2
  : >"$dir/zookeeper.log"
  (
    cd "$dir"
    exec nohup java -Xmx512m -cp "$classpath" \
      -Dzookeeper.root.logger=INFO,CONSOLE -Dzookeeper.log.dir="$dir" "$@" \
      org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
      >>"$dir/zookeeper.log" 2>&1 </dev/null
  ) &
  echo $! >"$dir/zookeeper.pid"
}

# Wait until PORT answers imok (and, with WANT_MODE=1, srvr reports leader/follower).
wait_serving() { # dir port want_mode
  local dir="$1" port="$2" want_mode="$3" deadline=$((SECONDS + START_TIMEOUT)) mode
  while [ "$SECONDS" -lt "$deadline" ]; do
    if is_imok "$port"; then
      [ "$want_mode" = 0 ] && return 0
      mode="$(server_mode "$port")"
      if [ "$mode" = leader ] || [ "$mode" = follower ]; then return 0; fi
    fi
    if ! pid_alive "$dir/zookeeper.pid" "$dir/zoo.cfg"; then
      echo "zk.sh: error: ZooKeeper on port $port exited during startup; last lines of $dir/zookeeper.log:" >&2
      tail -n 20 "$dir/zookeeper.log" >&2 || true
      rm -f "$dir/zookeeper.pid"
      return 1
    fi
    sleep 0.5
  done
  echo "zk.sh: error: ZooKeeper on port $port not serving after ${START_TIMEOUT}s (pid $(cat "$dir/zookeeper.pid") left running); last lines of $dir/zookeeper.log:" >&2
  tail -n 20 "$dir/zookeeper.log" >&2 || true
  return 1
}

# Stop the process named by DIR/zookeeper.pid: TERM, then KILL after STOP_TIMEOUT.
stop_dir() { # dir label
  local dir="$1" label="$2" pid deadline
  if ! pid_alive "$dir/zookeeper.pid" "$dir/zoo.cfg"; then
    rm -f "$dir/zookeeper.pid"
    say "$label: not running (no live process started by this script)"
    return 0
  fi
  pid="$(cat "$dir/zookeeper.pid")"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while running "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  if running "$pid"; then
    say "$label: pid $pid ignored TERM for ${STOP_TIMEOUT}s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    while running "$pid"; do sleep 0.1; done
  fi
  rm -f "$dir/zookeeper.pid"
  say "$label: stopped (pid $pid)"
}

# ---------- standalone ----------

standalone_dir() { echo "$ZK_ROOT/standalone-$STANDALONE_PORT"; }

cmd_start() {
  local dir port="$STANDALONE_PORT"
  dir="$(standalone_dir)"
  if is_imok "$port"; then
    say "ZooKeeper already answers imok on 127.0.0.1:$port; not starting another"
    echo "127.0.0.1:$port"
    return 0
  fi
  if port_busy "$port"; then
    die "port 127.0.0.1:$port is busy but does not answer 'ruok' with 'imok' (another program, or a ZooKeeper still starting?); set ZKMW_ZK_PORT or free the port"
  fi
  ensure_zookeeper
  mkdir -p "$dir/data"
  if pid_alive "$dir/zookeeper.pid" "$dir/zoo.cfg"; then
    say "a server started by this script is already running (pid $(cat "$dir/zookeeper.pid")); waiting for it"
  else
    write_common_cfg "$dir/zoo.cfg" "$dir/data" "$port"
    launch "$dir"
    say "started ZooKeeper (pid $(cat "$dir/zookeeper.pid")), log: $dir/zookeeper.log"
  fi
  wait_serving "$dir" "$port" 0 || exit 1
  say "ZooKeeper serving on 127.0.0.1:$port"
  echo "127.0.0.1:$port"
}

cmd_stop() {
  local dir port="$STANDALONE_PORT"
  dir="$(standalone_dir)"
  stop_dir "$dir" "standalone 127.0.0.1:$port"
  if is_imok "$port"; then
    say "note: a ZooKeeper not started by this script still answers on 127.0.0.1:$port; left alone"
  fi
}

cmd_status() {
  local dir port="$STANDALONE_PORT"
  dir="$(standalone_dir)"
  if is_imok "$port"; then
    if pid_alive "$dir/zookeeper.pid" "$dir/zoo.cfg"; then
      say "up: 127.0.0.1:$port answers imok (pid $(cat "$dir/zookeeper.pid"), started by this script)"
    else
      say "up: 127.0.0.1:$port answers imok (not started by this script)"
    fi
    four_lw "$port" srvr
    return 0
  fi
  say "down: nothing answers imok on 127.0.0.1:$port"
  return 1
}

# ---------- ensemble ----------

IFS=',' read -r -a CLIENT_PORTS <<<"$ENSEMBLE_PORTS"
IFS=',' read -r -a PEER <<<"$PEER_PORTS"
IFS=',' read -r -a ELECTION <<<"$ELECTION_PORTS"

check_ensemble_ports() {
  local setting list
  for setting in "ENSEMBLE_PORTS=$ENSEMBLE_PORTS" "ENSEMBLE_PEER_PORTS=$PEER_PORTS" \
                 "ENSEMBLE_ELECTION_PORTS=$ELECTION_PORTS"; do
    list="${setting#*=}"
    [[ "$list" =~ ^[0-9]+,[0-9]+,[0-9]+$ ]] || die "ZKMW_${setting%%=*} must list 3 ports, got '$list'"
  done
  if [ "$(printf '%s\n' "${CLIENT_PORTS[@]}" "${PEER[@]}" "${ELECTION[@]}" | sort -u | wc -l)" -ne 9 ]; then
    die "ensemble ports clash: client $ENSEMBLE_PORTS, peer $PEER_PORTS, election $ELECTION_PORTS"
  fi
}

node_dir() { echo "$ZK_ROOT/ensemble-$1"; }
node_port() { echo "${CLIENT_PORTS[$1 - 1]}"; }

check_node() { [[ "${1:-}" =~ ^[1-3]$ ]] || die "node number must be 1, 2 or 3 (got '${1:-}')"; }

# Write node N's config and launch it unless it already serves. Returns 0 if
# launched or already running.
launch_node() { # n
  local n="$1" dir port k
  dir="$(node_dir "$n")"
  port="$(node_port "$n")"
  if pid_alive "$dir/zookeeper.pid" "$dir/zoo.cfg"; then
    say "node $n: already running (pid $(cat "$dir/zookeeper.pid")), port $port"
    return 0
  fi
  if is_imok "$port"; then
    die "node $n: port $port already answers imok but was not started by this script"
  fi
  if port_busy "$port"; then
    die "node $n: port 127.0.0.1:$port is busy but does not answer 'ruok' with 'imok'"
  fi
  mkdir -p "$dir/data"
  echo "$n" >"$dir/data/myid"
  write_common_cfg "$dir/zoo.cfg" "$dir/data" "$port"
  {
    echo "initLimit=10"
    echo "syncLimit=5"
    for k in 1 2 3; do
      echo "server.$k=127.0.0.1:${PEER[k - 1]}:${ELECTION[k - 1]}"
    done
  } >>"$dir/zoo.cfg"
  launch "$dir"
  say "node $n: started (pid $(cat "$dir/zookeeper.pid")), port $port, log: $dir/zookeeper.log"
}

ensemble_connect_string() {
  local s="" n
  for n in 1 2 3; do s="$s${s:+,}127.0.0.1:$(node_port "$n")"; done
  echo "$s"
}

# Print each node's state; true when at least 2 nodes serve as leader/follower.
ensemble_report() {
  local n port mode serving=0
  for n in 1 2 3; do
    port="$(node_port "$n")"
    if is_imok "$port"; then
      mode="$(server_mode "$port")"
      say "node $n (127.0.0.1:$port): imok, mode: ${mode:-not serving}"
      if [ "$mode" = leader ] || [ "$mode" = follower ]; then serving=$((serving + 1)); fi
    else
      say "node $n (127.0.0.1:$port): down"
    fi
  done
  [ "$serving" -ge 2 ]
}

cmd_ensemble_start() {
  local n deadline ok
  check_ensemble_ports
  ensure_zookeeper
  for n in 1 2 3; do launch_node "$n"; done
  # Quorum: all nodes answer imok and at least 2 report leader/follower.
  deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    ok=1
    for n in 1 2 3; do is_imok "$(node_port "$n")" || ok=0; done
    if [ "$ok" = 1 ] && ensemble_report >/dev/null; then break; fi
    for n in 1 2 3; do
      if ! pid_alive "$(node_dir "$n")/zookeeper.pid" "$(node_dir "$n")/zoo.cfg"; then
        echo "zk.sh: error: ensemble node $n exited during startup; last lines of $(node_dir "$n")/zookeeper.log:" >&2
        tail -n 20 "$(node_dir "$n")/zookeeper.log" >&2 || true
        exit 1
      fi
    done
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "zk.sh: error: ensemble has no quorum after ${START_TIMEOUT}s" >&2
      ensemble_report >&2 || true
      for n in 1 2 3; do
        echo "--- last lines of $(node_dir "$n")/zookeeper.log" >&2
        tail -n 10 "$(node_dir "$n")/zookeeper.log" >&2 || true
      done
      exit 1
    fi
    sleep 0.5
  done
  ensemble_report
  say "ensemble serving"
  ensemble_connect_string
}

cmd_ensemble_stop() {
  local n
  check_ensemble_ports
  for n in 1 2 3; do stop_dir "$(node_dir "$n")" "node $n"; done
}

cmd_ensemble_status() {
  check_ensemble_ports
  if ensemble_report; then
    say "ensemble has a quorum: $(ensemble_connect_string)"
    return 0
  fi
  say "ensemble has no quorum"
  return 1
}

cmd_node_start() {
  local n="${1:-}" dir port
  check_node "$n"
  check_ensemble_ports
  ensure_zookeeper
  dir="$(node_dir "$n")"
  port="$(node_port "$n")"
  launch_node "$n"
  # A single node serves only once it has joined a quorum with another node.
  wait_serving "$dir" "$port" 1 || exit 1
  say "node $n serving as $(server_mode "$port") on 127.0.0.1:$port"
}

cmd_node_stop() {
  local n="${1:-}"
  check_node "$n"
  check_ensemble_ports
  stop_dir "$(node_dir "$n")" "node $n"
}

# ---------- TLS ----------

TLS_DIR="$ZK_ROOT/tls"
TLS_PLAIN_PORT="${ZKMW_TLS_PLAIN_PORT:-2191}"
TLS_PORT="${ZKMW_TLS_PORT:-2192}"
TLS_CLIENT_AUTH="${ZKMW_TLS_CLIENT_AUTH:-want}"
TLS_CERT_DAYS=3650
# The Netty server (the only one with TLS) needs its jars by name: the
# netty-all aggregator does not bring them.
TLS_CLASSPATH="$ZK_CLASSPATH"
for jar in netty-codec netty-common netty-buffer netty-transport netty-handler netty-resolver \
           netty-transport-native-epoll netty-transport-native-unix-common; do
  TLS_CLASSPATH="$TLS_CLASSPATH:/usr/share/java/$jar.jar"
done
# Every file tls_make_certs writes; all are remade when one is missing or expiring.
TLS_FILES=(ca.pem ca-key.pem server.pem server-key.pem keystore.p12 truststore.p12 store.pass
           client.pem client-key.pem client-key-rsa.pem
           other-ca.pem other-ca-key.pem other-client.pem other-client-key.pem)

tls_server_dir() { echo "$TLS_DIR/server-$TLS_PORT"; }

check_tls_settings() {
  local p
  for p in "$TLS_PLAIN_PORT" "$TLS_PORT"; do
    if ! [[ "$p" =~ ^[0-9]+$ ]] || [ "$p" -lt 1 ] || [ "$p" -gt 65535 ]; then
      die "bad port '$p' in ZKMW_TLS_PLAIN_PORT/ZKMW_TLS_PORT"
    fi
  done
  [ "$TLS_PLAIN_PORT" != "$TLS_PORT" ] || die "ZKMW_TLS_PLAIN_PORT and ZKMW_TLS_PORT are both $TLS_PORT"
  case "$TLS_CLIENT_AUTH" in
    none | want | need) ;;
    *) die "ZKMW_TLS_CLIENT_AUTH must be none, want or need (got '$TLS_CLIENT_AUTH')" ;;
  esac
}

ensure_tls_tools() {
  command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
  command -v keytool >/dev/null || die "keytool not found (it comes with java)"
}

# True when some TLS server started by this script runs (any ports).
tls_any_running() {
  local dir
  for dir in "$TLS_DIR"/server-*; do
    [ -d "$dir" ] && pid_alive "$dir/zookeeper.pid" "$dir/zoo.cfg" && return 0
  done
  return 1
}

# True when every certificate file exists and none expires within a day.
tls_certs_ok() {
  local f
  for f in "${TLS_FILES[@]}"; do [ -s "$TLS_DIR/$f" ] || return 1; done
  for f in ca.pem server.pem client.pem other-ca.pem other-client.pem; do
    openssl x509 -checkend 86400 -noout -in "$TLS_DIR/$f" >/dev/null 2>&1 || return 1
  done
}

# Make a throwaway CA, a server certificate for 127.0.0.1/localhost in a PKCS12
# keystore, a PKCS12 truststore holding the CA as a trusted entry, a client
# certificate from the same CA, and an unrelated CA with its own client
# certificate. Written to a temp folder first, then moved into $TLS_DIR.
tls_make_certs() {
  local tmp pass
  tmp="$(mktemp -d "$TLS_DIR/.certs.XXXXXX")"
  pass="$(openssl rand -hex 16)"
  cat >"$tmp/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
  (
    set -e
    cd "$tmp"
    quiet() { "$@" >>openssl.log 2>&1 || { cat openssl.log >&2; exit 1; }; }
    make_ca() { # name subject
      quiet openssl req -x509 -config openssl.cnf -extensions ca -newkey rsa:2048 -nodes \
        -keyout "$1-key.pem" -out "$1.pem" -days "$TLS_CERT_DAYS" -subj "$2"
    }
    make_cert() { # name ca extensions subject: NAME-key.pem is PKCS#8
      quiet openssl req -new -config openssl.cnf -newkey rsa:2048 -nodes \
        -keyout "$1-key.pem" -out "$1.csr" -subj "$4"
      quiet openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2-key.pem" \
        -set_serial "0x$(openssl rand -hex 12)" -days "$TLS_CERT_DAYS" \
        -extfile openssl.cnf -extensions "$3" -out "$1.pem"
    }
    make_ca ca "/CN=zkmw throwaway test CA"
    make_cert server ca server "/CN=localhost"
    make_cert client ca client "/CN=zkmw-test-client"
    quiet openssl rsa -in client-key.pem -traditional -out client-key-rsa.pem
    make_ca other-ca "/CN=zkmw unrelated test CA"
    make_cert other-client other-ca client "/CN=zkmw-untrusted-client"
    quiet openssl pkcs12 -export -in server.pem -inkey server-key.pem -certfile ca.pem \
      -name zkmw-server -out keystore.p12 -passout "pass:$pass"
    quiet keytool -importcert -noprompt -alias zkmw-ca -file ca.pem \
      -keystore truststore.p12 -storetype PKCS12 -storepass "$pass"
    printf '%s\n' "$pass" >store.pass
    chmod 600 ./*-key.pem keystore.p12 truststore.p12 store.pass
  ) || { rm -rf "$tmp"; die "could not make the TLS certificates"; }
  local f
  for f in "${TLS_FILES[@]}"; do mv -f "$tmp/$f" "$TLS_DIR/$f"; done
  rm -rf "$tmp"
  say "made throwaway TLS certificates in $TLS_DIR (CA: ca.pem; client: client.pem, client-key.pem)"
}

# True when a TLS handshake with 127.0.0.1:PORT verifies against ca.pem for
# 127.0.0.1 (the client certificate is offered, as servers with `need` want it).
tls_handshake_ok() { # port
  timeout 5 openssl s_client -connect "127.0.0.1:$1" -CAfile "$TLS_DIR/ca.pem" \
    -verify_ip 127.0.0.1 -cert "$TLS_DIR/client.pem" -key "$TLS_DIR/client-key.pem" \
    </dev/null 2>/dev/null | grep -q '^ *Verify return code: 0 (ok)'
}

# Wait until the secure port of the server in DIR completes a verified TLS handshake.
wait_tls_handshake() { # dir port
  local dir="$1" port="$2" deadline=$((SECONDS + START_TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    tls_handshake_ok "$port" && return 0
    if ! pid_alive "$dir/zookeeper.pid" "$dir/zoo.cfg"; then
      echo "zk.sh: error: TLS ZooKeeper exited during startup; last lines of $dir/zookeeper.log:" >&2
      tail -n 20 "$dir/zookeeper.log" >&2 || true
      rm -f "$dir/zookeeper.pid"
      return 1
    fi
    sleep 0.5
  done
  echo "zk.sh: error: no verified TLS handshake on 127.0.0.1:$port after ${START_TIMEOUT}s (pid $(cat "$dir/zookeeper.pid") left running); last lines of $dir/zookeeper.log:" >&2
  tail -n 20 "$dir/zookeeper.log" >&2 || true
  return 1
}

# The clientAuth a running TLS server was started with.
tls_running_client_auth() { # dir
  tr '\0' '\n' <"/proc/$(cat "$1/zookeeper.pid")/cmdline" 2>/dev/null \
    | sed -n 's/^-Dzookeeper\.ssl\.clientAuth=//p'
}

cmd_tls_start() {
  local dir pass running_auth
  check_tls_settings
  dir="$(tls_server_dir)"
  mkdir -p "$TLS_DIR"
  # One tls-start at a time (tests may call it concurrently).
  exec 9>"$TLS_DIR/.lock"
  flock -w $((START_TIMEOUT + 30)) 9 || die "another tls-start holds $TLS_DIR/.lock"
  ensure_zookeeper
  ensure_tls_tools
  if pid_alive "$dir/zookeeper.pid" "$dir/zoo.cfg"; then
    running_auth="$(tls_running_client_auth "$dir")"
    if [ "$running_auth" != "$TLS_CLIENT_AUTH" ]; then
      die "the TLS server on 127.0.0.1:$TLS_PORT runs with clientAuth=$running_auth, not $TLS_CLIENT_AUTH: run tls-stop first"
    fi
    tls_certs_ok || die "the TLS server on 127.0.0.1:$TLS_PORT runs but its certificates in $TLS_DIR are missing or expiring: run tls-stop, then tls-start"
    say "TLS server already running (pid $(cat "$dir/zookeeper.pid")); checking it"
  else
    if is_imok "$TLS_PLAIN_PORT"; then
      die "port 127.0.0.1:$TLS_PLAIN_PORT already answers imok but that server was not started by tls-start; set ZKMW_TLS_PLAIN_PORT or stop it"
    fi
    local p
    for p in "$TLS_PLAIN_PORT" "$TLS_PORT"; do
      port_busy "$p" && die "port 127.0.0.1:$p is busy; set ZKMW_TLS_PLAIN_PORT/ZKMW_TLS_PORT or free it"
    done
    if ! tls_certs_ok; then
      tls_any_running && die "the TLS certificates in $TLS_DIR are missing or expiring while a TLS server runs: run tls-stop first"
      tls_make_certs
    fi
    pass="$(cat "$TLS_DIR/store.pass")"
    mkdir -p "$dir/data"
    write_common_cfg "$dir/zoo.cfg" "$dir/data" "$TLS_PLAIN_PORT"
    {
      echo "secureClientPort=$TLS_PORT"
      echo "secureClientPortAddress=127.0.0.1"
    } >>"$dir/zoo.cfg"
    launch_with "$dir" "$TLS_CLASSPATH" \
      -Dzookeeper.serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory \
      -Dzookeeper.ssl.keyStore.location="$TLS_DIR/keystore.p12" \
      -Dzookeeper.ssl.keyStore.password="$pass" \
      -Dzookeeper.ssl.keyStore.type=PKCS12 \
      -Dzookeeper.ssl.trustStore.location="$TLS_DIR/truststore.p12" \
      -Dzookeeper.ssl.trustStore.password="$pass" \
      -Dzookeeper.ssl.trustStore.type=PKCS12 \
      -Dzookeeper.ssl.clientAuth="$TLS_CLIENT_AUTH" 9>&-  # the server must not hold the lock
    say "started TLS ZooKeeper (pid $(cat "$dir/zookeeper.pid")), clientAuth=$TLS_CLIENT_AUTH, log: $dir/zookeeper.log"
  fi
  wait_serving "$dir" "$TLS_PLAIN_PORT" 0 || exit 1
  wait_tls_handshake "$dir" "$TLS_PORT" || exit 1
  say "ZooKeeper serving on 127.0.0.1:$TLS_PLAIN_PORT (plain) and 127.0.0.1:$TLS_PORT (TLS, clientAuth=$TLS_CLIENT_AUTH); CA: $TLS_DIR/ca.pem"
  echo "127.0.0.1:$TLS_PORT"
}

cmd_tls_stop() {
  local dir ports any=0
  mkdir -p "$TLS_DIR"
  exec 9>"$TLS_DIR/.lock"
  flock -w $((START_TIMEOUT + 30)) 9 || die "another tls-start holds $TLS_DIR/.lock"
  for dir in "$TLS_DIR"/server-*; do
    [ -f "$dir/zoo.cfg" ] || continue
    any=1
    ports="$(sed -n 's/^clientPort=//p' "$dir/zoo.cfg")/$(sed -n 's/^secureClientPort=//p' "$dir/zoo.cfg")"
    stop_dir "$dir" "TLS server 127.0.0.1:$ports (plain/TLS)"
  done
  [ "$any" = 1 ] || say "TLS: not running (no server started by this script)"
}

cmd_tls_status() {
  local dir
  check_tls_settings
  dir="$(tls_server_dir)"
  if is_imok "$TLS_PLAIN_PORT" && pid_alive "$dir/zookeeper.pid" "$dir/zoo.cfg"; then
    if tls_handshake_ok "$TLS_PORT"; then
      say "up: 127.0.0.1:$TLS_PLAIN_PORT answers imok, 127.0.0.1:$TLS_PORT completes a verified TLS handshake (pid $(cat "$dir/zookeeper.pid"), clientAuth=$(tls_running_client_auth "$dir")); CA: $TLS_DIR/ca.pem"
      return 0
    fi
    say "partly up: 127.0.0.1:$TLS_PLAIN_PORT answers imok (pid $(cat "$dir/zookeeper.pid")) but no verified TLS handshake on 127.0.0.1:$TLS_PORT"
    return 1
  fi
  say "down: no TLS server started by this script serves on 127.0.0.1:$TLS_PLAIN_PORT/$TLS_PORT"
  return 1
}

# ---------- every server of the files folder ----------

# Stop every server this script started under the files folder (standalone, ensemble
# nodes, TLS), whatever its ports: the pid files say which.
cmd_stop_all() {
  local pidfile any=0
  while IFS= read -r pidfile; do
    any=1
    stop_dir "$(dirname "$pidfile")" "server in $(dirname "$pidfile")"
  done < <(find "$ZK_ROOT" -name zookeeper.pid 2>/dev/null | sort)
  [ "$any" = 1 ] || say "no server started by this script in $ZK_ROOT"
}

# Print "PID COMMAND LINE" of each process whose command line names the files folder
# (a server, a role or job with a path in it): what a cleanup must not leave behind.
cmd_procs() {
  local p cmdline
  for p in /proc/[0-9]*; do
    cmdline="$(tr '\0' ' ' 2>/dev/null <"$p/cmdline")" || continue
    if [[ "$cmdline" == *"$ZK_ROOT/"* ]]; then echo "${p#/proc/} $cmdline"; fi
  done
}

# Print N distinct ports (one line, space-separated) of 127.0.0.1 in 20000-31999 where
# nothing listens and that no test process has taken (PORT_LOCKS). Nothing is reserved
# for the caller: it should start its servers on them at once.
cmd_free_ports() {
  local want="${1:-1}" got=() port tries=0
  [[ "$want" =~ ^[1-9][0-9]?$ ]] || die "free-ports: N must be 1 to 99 (got '$want')"
  while [ "${#got[@]}" -lt "$want" ]; do
    tries=$((tries + 1))
    [ "$tries" -le 1000 ] || die "free-ports: no $want free ports found in 20000-31999"
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    [[ " ${got[*]} " == *" $port "* ]] && continue
    port_busy "$port" && continue
    if [ -e "$PORT_LOCKS/$port" ] && ! flock -n "$PORT_LOCKS/$port" true 2>/dev/null; then continue; fi
    got+=("$port")
  done
  echo "${got[*]}"
}

# ---------- another ZooKeeper release ----------

# Print the release of the server on 127.0.0.1:PORT (3.8.0, say); fail when none answers.
cmd_version() { # port
  local version
  [[ "${1:-}" =~ ^[0-9]+$ ]] || die "version: name the server's client port"
  version="$(four_lw "$1" srvr | sed -n 's/^Zookeeper version: \([^-,]*\).*/\1/p')"
  [ -n "$version" ] || die "version: no ZooKeeper answers on 127.0.0.1:$1"
  echo "$version"
}

DEBIAN_LATER="${ZKMW_ZK_LATER_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_LATER_SUITE=trixie

# Download Debian 13's libzookeeper-java (ZooKeeper 3.9, Java 8 bytecode, the same
# dependencies as 3.8) into DIR and print ZKMW_ZK_JARS for it: a later release to run
# the tests, chaos.sh or storm.sh against, beside Debian 12's 3.8.0. For developers'
# comparisons only; CI and the tests use the installed package.
cmd_later_jars() { # dir
  local dir="${1:-}" index file deb jars
  [ -n "$dir" ] || die "later-jars: name a folder for the jars"
  mkdir -p "$dir" || die "later-jars: cannot make $dir"
  dir="$(cd "$dir" && pwd)"
  index="$DEBIAN_LATER/dists/$DEBIAN_LATER_SUITE/main/binary-all/Packages.xz"
  file="$(curl -fsS --max-time 60 "$index" | xz -dc \
    | awk '$1 == "Package:" { pkg = $2 } pkg == "libzookeeper-java" && $1 == "Filename:" { print $2; exit }')" \
    || die "later-jars: cannot read $index"
  [ -n "$file" ] || die "later-jars: $index names no libzookeeper-java"
  deb="$dir/$(basename "$file")"
  curl -fsS --max-time 300 -o "$deb" "$DEBIAN_LATER/$file" || die "later-jars: cannot download $file"
  dpkg-deb -x "$deb" "$dir/pkg" || die "later-jars: cannot unpack $deb"
  # The jute jar first: zookeeper.jar's manifest names Debian 12's by its plain name.
  jars="$(readlink -f "$dir/pkg/usr/share/java/zookeeper-jute.jar"):$(readlink -f "$dir/pkg/usr/share/java/zookeeper.jar")"
  say "$(basename "$file") unpacked; run with:" >&2
  echo "$jars"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  ensemble-start) cmd_ensemble_start ;;
  ensemble-stop) cmd_ensemble_stop ;;
  ensemble-status) cmd_ensemble_status ;;
  node-start) cmd_node_start "${2:-}" ;;
  node-stop) cmd_node_stop "${2:-}" ;;
  tls-start) cmd_tls_start ;;
  tls-stop) cmd_tls_stop ;;
  tls-status) cmd_tls_status ;;
  stop-all) cmd_stop_all ;;
  procs) cmd_procs ;;
  free-ports) cmd_free_ports "${2:-1}" ;;
  version) cmd_version "${2:-}" ;;
  later-jars) cmd_later_jars "${2:-}" ;;
  *)
    echo "usage: $0 start|stop|status|ensemble-start|ensemble-stop|ensemble-status|node-start N|node-stop N|tls-start|tls-stop|tls-status|stop-all|procs|free-ports N|version PORT|later-jars DIR" >&2
    exit 2
    ;;
esac
