#!/bin/sh
# The monitoring-ws agent's installer, rendered by the server @SERVER@ (docs/install.md).
#
#   curl -fsSL @SERVER@/install.sh | sudo MONITORING_WS_JOIN_TOKEN=mwsj1... sh
#   ... | MONITORING_WS_JOIN_TOKEN=mwsj1... sh -s -- --prefix DIR    (no root, no systemd)
#
# It downloads the agent release this server offers for this machine, checks its SHA-256
# (written below by the server), enrolls with the join token (whose certificate pin makes
# the agent trust this server and nothing else), installs the launcher and the systemd unit
# and starts the agent. Running it again upgrades to the offered release and keeps the
# settings, the outbox and the enrollment.
set -eu

server='@SERVER@'
enroll_url='@ENROLL_URL@'
# curl's --pinnedpubkey for this server's certificate (empty: the system's trust store).
pinned_key='@PINNED_KEY@'

die() {
  echo "install.sh: $*" >&2
  exit 1
}

usage() {
  cat <<'USAGE'
install.sh [--prefix DIR] [--agent-id ID] [--no-start]
  (no option)    a system install: root and systemd, the agent runs as its own user
  --prefix DIR   everything under DIR, no root, no systemd; the agent starts in the background
  --agent-id ID  the agent's id (default: the EC2 instance id, else the host name)
  --no-start     install and enroll, do not start
The join token comes in $MONITORING_WS_JOIN_TOKEN (never as an argument: ps shows those).
USAGE
}

prefix=
agent_id=
start=yes
while [ $# -gt 0 ]; do
  case $1 in
  --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
  --prefix=*) prefix=${1#--prefix=}; shift ;;
  --agent-id) [ $# -ge 2 ] || die "--agent-id needs an id"; agent_id=$2; shift 2 ;;
  --agent-id=*) agent_id=${1#--agent-id=}; shift ;;
  --no-start) start=no; shift ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; die "unknown option: $1" ;;
  esac
done

[ "$(uname -s)" = Linux ] || die "the monitoring-ws agent runs on Linux, not $(uname -s)"
machine=$(uname -m)
case $machine in
@RELEASES@
*) die "this server offers no agent release for $machine (it has: @PLATFORMS@)" ;;
esac

python=${MONITORING_WS_PYTHON:-$(command -v python3 || true)}
[ -n "$python" ] || die "Python 3.11 or newer is needed: apt-get install python3 (Debian 12, Ubuntu 24.04), dnf install python3.11 (RHEL 9)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || die "Python 3.11 or newer is needed; $python is $("$python" -V 2>&1). Set MONITORING_WS_PYTHON to another interpreter"

if [ -n "$prefix" ]; then
  mkdir -p "$prefix" && prefix=$(cd "$prefix" && pwd) || die "cannot create $prefix"
  home=$prefix/var/lib/monitoring-ws-agent
  launcher=$prefix/bin/monitoring-ws-agent
  config=$prefix/etc/monitoring-ws/agent.json
  systemd=no
else
  [ "$(id -u)" = 0 ] || die "a system install needs root (sudo sh), or use --prefix DIR"
  [ -d /run/systemd/system ] || die "systemd is not running here: use --prefix DIR and start the agent yourself"
  home=/var/lib/monitoring-ws-agent
  launcher=/usr/local/bin/monitoring-ws-agent
  config=/etc/monitoring-ws/agent.json
  systemd=yes
fi

fetch() { # URL FILE
  if command -v curl >/dev/null 2>&1; then
    if [ -n "$pinned_key" ]; then
      curl -fsSL --proto '=https' -k --pinnedpubkey "$pinned_key" -o "$2" "$1"
    else
      curl -fsSL -o "$2" "$1"
    fi
  elif command -v wget >/dev/null 2>&1 && [ -z "$pinned_key" ]; then
    wget -q -O "$2" "$1"
  else
    die "curl is needed to download the agent (apt-get install curl)"
  fi
}

sha256_of() {
  "$python" -c 'import hashlib, sys; print(hashlib.file_digest(open(sys.argv[1], "rb"), "sha256").hexdigest())' "$1"
}

release=$home/releases/$version
artifact=$release/monitoring-ws-agent.pyz
umask 077
mkdir -p "$home/releases"
if [ -f "$artifact" ] && [ "$(sha256_of "$artifact")" = "$sha256" ]; then
  echo "install.sh: release $version is already here"
else
  staging=$(mktemp -d "$home/releases/.incoming-XXXXXX")
  trap 'rm -rf "$staging"' EXIT INT TERM
  echo "install.sh: downloading the agent $version for $machine"
  fetch "$server/agent/releases/$version/$file" "$staging/monitoring-ws-agent.pyz" \
    || die "cannot download $server/agent/releases/$version/$file"
  got=$(sha256_of "$staging/monitoring-ws-agent.pyz")
  [ "$got" = "$sha256" ] || die "the download's SHA-256 is $got, the server pinned $sha256: nothing was installed"
  chmod 0644 "$staging/monitoring-ws-agent.pyz"
  rm -rf "$release"
  mv "$staging" "$release"
  chmod 0755 "$release"
  trap - EXIT INT TERM
fi
ln -sfn "releases/$version" "$home/current.new"
mv -fT "$home/current.new" "$home/current"

mkdir -p "$(dirname "$launcher")" "$(dirname "$config")"
if [ "$systemd" = yes ]; then
  unit=/etc/systemd/system/monitoring-ws-agent.service
  "$python" "$artifact" agent setup --home "$home" --launcher "$launcher" --python "$python" \
    --config "$config" --unit "$unit"
else
  "$python" "$artifact" agent setup --home "$home" --launcher "$launcher" --python "$python"
fi

if [ -f "$config" ] && grep -q '"wsAgentKey"' "$config"; then
  echo "install.sh: already enrolled: keeping $config"
else
  [ -n "${MONITORING_WS_JOIN_TOKEN:-}" ] \
    || die "set MONITORING_WS_JOIN_TOKEN to a join token (monitoring-ws token create, on the server)"
  if [ "$systemd" = yes ]; then
    "$launcher" agent enroll --url "$enroll_url" --output "$config" ${agent_id:+--agent-id "$agent_id"}
  else
    "$launcher" agent enroll --url "$enroll_url" --output "$config" --state-dir "$home" \
      ${agent_id:+--agent-id "$agent_id"}
  fi
fi

if [ "$systemd" = yes ]; then
  getent passwd monitoring-ws-agent >/dev/null \
    || useradd --system --user-group --home-dir "$home" --no-create-home --shell /usr/sbin/nologin monitoring-ws-agent
  chown -R monitoring-ws-agent:monitoring-ws-agent "$home"
  chmod 0600 "$config"
  systemctl daemon-reload
  systemctl enable monitoring-ws-agent.service >/dev/null
  if [ "$start" = yes ]; then
    systemctl restart monitoring-ws-agent.service
    echo "install.sh: the agent runs: systemctl status monitoring-ws-agent"
  fi
elif [ "$start" = yes ]; then
  pidfile=$home/agent.pid
  if [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then
    echo "install.sh: stopped the agent that ran (pid $(cat "$pidfile"))"
  fi
  nohup "$launcher" agent --config "$config" >>"$home/agent.log" 2>&1 &
  echo $! >"$pidfile"
  echo "install.sh: the agent runs (pid $!); its log: $home/agent.log"
else
  echo "install.sh: installed; start it with: $launcher agent --config $config"
fi
