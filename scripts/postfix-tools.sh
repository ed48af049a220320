#!/usr/bin/env bash
# Makes Postfix's smtp-sink and smtp-source (load-test SMTP server and client)
# available, without leaving the Postfix mail daemon running.
#
# On Debian both ship in the `postfix` package under /usr/sbin. The package is
# installed non-interactively with "No configuration" preseeded, so it writes no
# main.cf and has nothing to deliver; if the install started the daemon anyway, it is
# stopped. Idempotent: when both tools exist it installs nothing (it still makes sure
# no daemon is running). Prints the paths of the two tools, one per line:
#   smtp-sink=/usr/sbin/smtp-sink
#   smtp-source=/usr/sbin/smtp-source
set -euo pipefail

find_tool() {
  command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true
}

# The Postfix master daemon, if one is running (its pid file, else by exact process
# name; `pgrep -x` matches the name exactly, not a command-line pattern).
postfix_master_pids() {
  local pid f=/var/spool/postfix/pid/master.pid
  if [ -r "$f" ]; then
    pid=$(tr -d ' \n' <"$f")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
  fi
  if command -v pgrep >/dev/null 2>&1; then pgrep -x master -u root 2>/dev/null || true; fi
}

stop_daemon() {
  # `postfix stop` is the orderly way; fall back to the init script, then to the
  # master's own pid.
  if [ -x /usr/sbin/postfix ] && /usr/sbin/postfix status >/dev/null 2>&1; then
    echo "stopping the postfix daemon started by the package" >&2
    /usr/sbin/postfix stop >/dev/null 2>&1 || true
  fi
  if [ -x /etc/init.d/postfix ]; then
    /etc/init.d/postfix stop >/dev/null 2>&1 || true
  fi
  local pid
  for pid in $(postfix_master_pids | sort -u); do
    # Only a process whose executable is Postfix's master.
    if [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "/usr/lib/postfix/sbin/master" ]; then
      echo "stopping postfix master (pid $pid)" >&2
      kill "$pid" 2>/dev/null || true
    fi
  done
}

sink=$(find_tool smtp-sink)
source=$(find_tool smtp-source)

if [ -z "$sink" ] || [ -z "$source" ]; then
  echo "installing postfix (for smtp-sink and smtp-source; the daemon is not kept running)" >&2
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # Keep invoke-rc.d from starting the daemon during the install, where a policy
  # layer allows it; restore whatever was there before.
  policy=/usr/sbin/policy-rc.d
  had_policy=0
  if [ -e "$policy" ]; then had_policy=1; cp -p "$policy" "$policy.maily-bak"; fi
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  restore_policy() {
    if [ "$had_policy" = 1 ]; then mv -f "$policy.maily-bak" "$policy"; else rm -f "$policy"; fi
  }
  trap restore_policy EXIT
  if ! apt-get install -y --no-install-recommends postfix >/tmp/postfix-tools-apt.log 2>&1; then
    # The package lists may be missing or stale on a fresh machine.
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends postfix >/tmp/postfix-tools-apt.log 2>&1 || {
      tail -n 30 /tmp/postfix-tools-apt.log >&2
      echo "error: apt-get install postfix failed (log: /tmp/postfix-tools-apt.log)" >&2
      exit 1
    }
  fi
  restore_policy
  trap - EXIT
  sink=$(find_tool smtp-sink)
  source=$(find_tool smtp-source)
fi

stop_daemon

if [ -z "$sink" ] || [ -z "$source" ]; then
  echo "error: smtp-sink or smtp-source still missing after installing postfix" >&2
  exit 1
fi
echo "smtp-sink=$sink"
echo "smtp-source=$source"
