#!/bin/sh
# The monitoring-ws agent's launcher (docs/install.md, "Layout"), written by install.sh or
# the Debian package. It runs the release that $home/current points at, and rolls a
# self-update back when the new release did not connect before its deadline (the agent
# does that itself when it runs; this covers a release that cannot even start).
set -eu
home='@HOME@'
python='@PYTHON@'
packaged='@PACKAGED@'
MONITORING_WS_HOME=$home
MONITORING_WS_LAUNCHER='@LAUNCHER@'
# shiv unpacks the artifact's compiled modules here, once per build.
SHIV_ROOT=${CACHE_DIRECTORY:-$home/cache}
export MONITORING_WS_HOME MONITORING_WS_LAUNCHER SHIV_ROOT
pending=$home/update/pending
if [ -f "$pending" ]; then
  deadline=0 from= to=
  read -r deadline from to <"$pending" || true
  case $deadline in '' | *[!0-9]*) deadline=0 ;; esac
  if [ -n "$from" ] && [ "$(date +%s)" -gt "$deadline" ]; then
    if [ "$from" = - ]; then # back to the packaged artifact
      rm -f "$home/current"
    else
      ln -sfn "releases/$from" "$home/current.rollback"
      mv -fT "$home/current.rollback" "$home/current"
    fi
    printf 'rolled_back %s %s %s\n' "$from" "$to" "$(date +%s)" >"$home/update/last"
    rm -f "$pending"
    echo "monitoring-ws-agent: release $to did not connect in time: rolled back to $from" >&2
  fi
fi
artifact=$home/current/monitoring-ws-agent.pyz
if [ ! -f "$artifact" ] && [ -n "$packaged" ]; then
  artifact=$packaged
fi
exec "$python" "$artifact" "$@"
