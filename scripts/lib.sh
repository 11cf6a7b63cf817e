# shellcheck shell=bash
# Shared by scripts/serve, test, bench and the profiling scripts (sourced, not run): messages,
# installing Debian packages, free ports, "does a Redis or a PostgreSQL answer there?", "does a
# suppressd answer from its near-cache?", and private redis-server / PostgreSQL instances on a
# free port with their data in a temporary directory.
# Each start_* records what it started in PRIVATE_* variables; stop_private stops exactly those
# and never anything else (a shared instance is never stopped, flushed or restarted).

# Messages go to standard error, prefixed with the script's name.
say() { printf '%s: %s\n' "scripts/${0##*/}" "$*" >&2; }
die() {
  say "$@"
  exit 1
}

# install_packages NO_INSTALL CONSEQUENCE PACKAGE...: installs the Debian packages with apt-get when
# it may (as root or with passwordless sudo, and NO_INSTALL empty); otherwise prints one line naming
# what is missing and CONSEQUENCE, and goes on.
install_packages() {
  local no_install=$1 consequence=$2 sudo=()
  shift 2
  if [[ $(id -u) != 0 ]] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  fi
  if [[ -z $no_install ]] && command -v apt-get >/dev/null 2>&1 &&
    [[ $(id -u) == 0 || ${#sudo[@]} != 0 ]]; then
    say "installing $* with apt-get"
    ${sudo[@]+"${sudo[@]}"} apt-get update -qq
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    say "missing $*; $consequence: sudo apt-get install $* (Debian/Ubuntu)"
  fi
}

# Runs "$@" with a time limit when coreutils' timeout is there (a connect to a silent host must not
# hang the script).
with_timeout() {
  local secs=$1
  shift
  if command -v timeout >/dev/null 2>&1; then
    timeout "$secs" "$@"
  else
    "$@"
  fi
}

# Whether something accepts TCP connections on HOST PORT (bash's /dev/tcp, no other tool needed).
port_open() {
  # shellcheck disable=SC2016 # the inner bash expands them
  with_timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# Whether the suppressd whose admin endpoint is on 127.0.0.1 PORT answers checks from its
# near-cache (its serving gauge says 1).
near_serving() {
  local page
  page=$( (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3) 2>/dev/null)
  grep -q '^suppressd_near_cache_serving 1' <<<"$page"
}

# Waits up to SECONDS (polling twice a second) until near_serving PORT; fails if it never does.
wait_near_serving() {
  local port=$1 tries=$(($2 * 2))
  for _ in $(seq 1 "$tries"); do
    near_serving "$port" && return 0
    sleep 0.5
  done
  near_serving "$port"
}

# A TCP port on 127.0.0.1 nobody listens on, below Linux's ephemeral range. Racy by nature: the
# start_* functions try another port when the server cannot bind it.
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 12000))
    if ! port_open 127.0.0.1 "$port"; then
      echo "$port"
      return 0
    fi
  done
  die "found no free port on 127.0.0.1"
}

# "HOST PORT" of a redis:// URL (user, password, database and parameters ignored); fails for other
# schemes (rediss://, unix sockets), which these scripts do not probe.
redis_host_port() {
  local url=$1 rest host port
  [[ $url == redis://* ]] || return 1
  rest=${url#redis://}
  rest=${rest%%/*}
  rest=${rest%%\?*}
  rest=${rest##*@}
  if [[ $rest =~ ^\[(.*)\](:([0-9]+))?$ ]]; then
    host=${BASH_REMATCH[1]}
    port=${BASH_REMATCH[3]:-6379}
  elif [[ $rest == *:* ]]; then
    host=${rest%%:*}
    port=${rest##*:}
  else
    host=$rest
    port=6379
  fi
  echo "${host:-127.0.0.1} ${port:-6379}"
}

# Whether a Redis answers PING at HOST PORT. Any reply counts (+PONG, or an error such as NOAUTH from
# a Redis that wants a password: it is there, and the URL's credentials are the server's business).
redis_answers_at() {
  local reply
  # shellcheck disable=SC2016 # the inner bash expands them
  reply=$(with_timeout 3 bash -c \
    'exec 3<>"/dev/tcp/$1/$2" && printf "PING\r\n" >&3 && IFS= read -r -t 2 line <&3 && echo "$line"' \
    _ "$1" "$2" 2>/dev/null) || return 1
  [[ $reply == +* || $reply == -* ]]
}

# Whether a Redis answers at URL. A URL these scripts cannot probe (TLS, unix socket) is taken as up.
redis_answers() {
  local hp
  hp=$(redis_host_port "$1") || return 0
  # shellcheck disable=SC2086 # "HOST PORT", split on purpose
  redis_answers_at $hp
}

# The directory holding PostgreSQL's server programs (initdb, pg_ctl): PATH first, then the newest
# of Debian's /usr/lib/postgresql/*/bin. Fails when there is none.
pg_bin_dir() {
  local initdb
  if initdb=$(command -v initdb 2>/dev/null); then
    dirname "$initdb"
    return 0
  fi
  local dirs
  dirs=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V)
  [[ -n $dirs && -x ${dirs##*$'\n'}/initdb ]] || return 1
  echo "${dirs##*$'\n'}"
}

# Whether a PostgreSQL at HOST PORT lets user postgres in without a password (what the tests need):
# psql when there is one, else pg_isready, else an open port.
pg_answers() {
  local host=$1 port=$2 bin psql pg_isready
  bin=$(pg_bin_dir 2>/dev/null || true)
  psql=$(command -v psql 2>/dev/null || echo "${bin:+$bin/psql}")
  pg_isready=$(command -v pg_isready 2>/dev/null || echo "${bin:+$bin/pg_isready}")
  if [[ -n $psql && -x $psql ]]; then
    PGCONNECT_TIMEOUT=3 "$psql" -w -X -q -At -h "$host" -p "$port" -U postgres -d postgres \
      -c 'SELECT 1' >/dev/null 2>&1
  elif [[ -n $pg_isready && -x $pg_isready ]]; then
    "$pg_isready" -q -t 3 -h "$host" -p "$port"
  else
    port_open "$host" "$port"
  fi
}

# How a private instance is started: in a session of its own when setsid exists, so that Ctrl-C in
# the terminal reaches only the script's foreground program (suppressd, cargo), and the script stops
# the instance itself, after that program is done with it. (setsid execs the program, so $! is it.)
DETACHED=()
if command -v setsid >/dev/null 2>&1; then DETACHED=(setsid); fi

PRIVATE_DIR=""
PRIVATE_REDIS_PID=""
PRIVATE_REDIS_PORT=""
PRIVATE_PG_PORT=""
PRIVATE_PG_DATA=""
PRIVATE_PG_BIN=""
PRIVATE_PG_AS=()

# A temporary directory for the private instances, made once.
private_dir() {
  if [[ -z $PRIVATE_DIR ]]; then
    PRIVATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/suppressd-private.XXXXXX")
  fi
}

# Starts a redis-server of the script's own on a free 127.0.0.1 port, without persistence; sets
# PRIVATE_REDIS_PORT and PRIVATE_REDIS_PID.
start_private_redis() {
  private_dir
  local dir=$PRIVATE_DIR/redis port pid
  mkdir -p "$dir"
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    ${DETACHED[@]+"${DETACHED[@]}"} redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$dir" --logfile "$dir/redis.log" </dev/null >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
      if redis_answers_at 127.0.0.1 "$port"; then
        PRIVATE_REDIS_PID=$pid
        # shellcheck disable=SC2034 # read by the scripts that source this file
        PRIVATE_REDIS_PORT=$port
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  die "the private redis-server did not start; its log: $dir/redis.log"
}

# Runs a PostgreSQL program as the cluster's owner ("${a[@]}" of an empty array trips set -u in old
# bash, hence the +).
as_pg_owner() {
  ${PRIVATE_PG_AS[@]+"${PRIVATE_PG_AS[@]}"} "$@"
}

# Starts a PostgreSQL cluster of the script's own (initdb with trust auth for user postgres, fsync
# off) on a free 127.0.0.1 port; sets PRIVATE_PG_PORT. initdb refuses root: as root the cluster runs
# as the system user postgres (Debian's packages create it).
start_private_pg() {
  local bin
  bin=$(pg_bin_dir) || die "no PostgreSQL server programs (initdb, pg_ctl) found"
  private_dir
  local dir=$PRIVATE_DIR/pg port
  mkdir -p "$dir"
  PRIVATE_PG_AS=()
  if [[ $(id -u) == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root, but there is no system user postgres to run PostgreSQL as"
    chmod 755 "$PRIVATE_DIR"
    chown postgres: "$dir"
    PRIVATE_PG_AS=(runuser -u postgres --)
  fi
  PRIVATE_PG_BIN=$bin
  as_pg_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync \
    >"$dir/initdb.log" 2>&1 || die "initdb failed; its log: $dir/initdb.log"
  PRIVATE_PG_DATA=$dir/data
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    if as_pg_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
      start >/dev/null 2>&1; then
      PRIVATE_PG_PORT=$port
      return 0
    fi
  done
  die "the private PostgreSQL did not start; its log: $dir/postgres.log"
}

# Stops what start_private_redis and start_private_pg started, and removes their data. Only those.
stop_private() {
  if [[ -n $PRIVATE_REDIS_PID ]]; then
    kill "$PRIVATE_REDIS_PID" 2>/dev/null || true
    wait "$PRIVATE_REDIS_PID" 2>/dev/null || true
    PRIVATE_REDIS_PID=""
  fi
  if [[ -n $PRIVATE_PG_PORT ]]; then
    as_pg_owner "$PRIVATE_PG_BIN/pg_ctl" -D "$PRIVATE_PG_DATA" -m fast -w stop \
      >/dev/null 2>&1 || true
    PRIVATE_PG_PORT=""
  fi
  if [[ -n $PRIVATE_DIR ]]; then
    rm -rf "$PRIVATE_DIR"
    PRIVATE_DIR=""
  fi
}
