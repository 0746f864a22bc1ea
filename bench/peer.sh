#!/bin/sh
# `make bench-peer`: the appliance next to Postfix and Postfix+OpenDKIM on this machine (see bench/peer.py).
#
# Installs Debian's postfix and opendkim when missing (no configuration of their own: the
# benchmark writes its own under a temporary directory and never touches /etc/postfix or the
# system's opendkim service), then runs bench/peer.py, then stops and removes everything it
# started, however it ends. Needs root. Loopback only. A benchmark: never part of `make test`.
#
#   bench/peer.sh [--rounds N] [--scale F]
set -eu

HERE=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$HERE/.venv/bin/python}

if [ "$(id -u)" -ne 0 ]; then
    echo "bench/peer.sh needs root (apt-get, and Postfix/OpenDKIM change to their own users)" >&2
    exit 1
fi

if ! [ -x /usr/sbin/postfix ] || ! [ -x /usr/sbin/opendkim ]; then
    echo "installing Debian's postfix and opendkim..."
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -q
    apt-get install -y -q --no-install-recommends postfix opendkim
fi

WORK=$(mktemp -d /tmp/bench-peer.XXXXXX)
RUNNER=
cleanup() {
    status=$?
    trap - EXIT INT TERM
    if [ -n "$RUNNER" ] && kill -0 "$RUNNER" 2>/dev/null; then
        kill -TERM "$RUNNER" 2>/dev/null || true  # it stops what it started, then exits
        wait "$RUNNER" 2>/dev/null || true
    fi
    if [ -f "$WORK/postfix/conf/main.cf" ]; then
        /usr/sbin/postfix -c "$WORK/postfix/conf" stop >/dev/null 2>&1 || true
    fi
    for pidfile in "$WORK/opendkim/opendkim.pid" "$WORK/appliance.pid"; do
        pid=$(cat "$pidfile" 2>/dev/null || true)
        # only a process of ours: its command line names the work directory
        if [ -n "$pid" ] && grep -q "$WORK" "/proc/$pid/cmdline" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
    done
    # Postfix's master exits a moment after `stop`; the queue goes with the directory
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        [ -s "$WORK/postfix/queue/pid/master.pid" ] && kill -0 "$(cat "$WORK/postfix/queue/pid/master.pid")" \
            2>/dev/null || break
        sleep 0.5
    done
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$HERE"
# In the background so that a signal reaches this shell's trap at once, not after the run.
"$PYTHON" bench/peer.py --work "$WORK" "$@" &
RUNNER=$!
wait "$RUNNER"
