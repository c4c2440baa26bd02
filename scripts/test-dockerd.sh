#!/usr/bin/env bash
# A private Docker engine for the integration tests and the apply bench.
#
#   scripts/test-dockerd.sh start   start it (or reuse the one already running), import the test image
#   scripts/test-dockerd.sh stop    stop it (its data stays, so the next start is quick)
#   scripts/test-dockerd.sh running exit status 0 when it answers
#   scripts/test-dockerd.sh env     print `export DOCKER_HOST=...` for a shell: eval "$(... env)"
#
# It never touches the system engine: its own socket, data root, exec root and pid file live
# under $GPUCONFIG_DOCKERD_DIR (default /tmp/gpuconfig-dockerd; unix socket paths are limited
# to 108 bytes, so it is kept short and away from the checkout). No bridge, no iptables, vfs
# storage: it runs inside a container or VM without extra privileges beyond root.
#
# GPU requests: dockerd registers its "nvidia" device driver only when it finds an executable
# named nvidia-container-runtime-hook on its PATH at start-up. A stand-in that reads the OCI
# state from stdin and exits 0 is put first on that PATH, so a container created with
# DeviceRequests=[{Driver: nvidia, DeviceIDs: ["1"], Capabilities: [[gpu]]}] starts, and the
# engine itself writes NVIDIA_VISIBLE_DEVICES=1 into its process environment, as on a real
# GPU host (where the real hook would then mount the devices).
#
# Needs (Debian): docker.io, busybox-static; runs as root.
set -euo pipefail

BASE=${GPUCONFIG_DOCKERD_DIR:-/tmp/gpuconfig-dockerd}
SOCK="$BASE/docker.sock"
PIDFILE="$BASE/dockerd.pid"
DATA_ROOT="$BASE/data"
EXEC_ROOT="$BASE/exec"
HOOK_DIR="$BASE/hook-bin"
LOG="$BASE/dockerd.log"
IMAGE=gpuconfig-test/busybox:latest
START_TIMEOUT=${GPUCONFIG_DOCKERD_START_TIMEOUT:-60}

export DOCKER_HOST="unix://$SOCK"

die() { echo "test-dockerd: $*" >&2; exit 1; }

engine_answers() {
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

engine_pid() {
    local pid
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    # A pid file left by a killed engine may name a process that reused the number, or a
    # zombie nobody has reaped yet.
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 1
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
    echo "$pid"
}

write_hook() {
    mkdir -p "$HOOK_DIR"
    cat >"$HOOK_DIR/nvidia-container-runtime-hook.tmp" <<'EOF'
#!/bin/sh
# Stand-in for the NVIDIA container runtime hook: consumes the OCI state and succeeds.
cat >/dev/null
exit 0
EOF
    chmod 755 "$HOOK_DIR/nvidia-container-runtime-hook.tmp"
    mv -f "$HOOK_DIR/nvidia-container-runtime-hook.tmp" "$HOOK_DIR/nvidia-container-runtime-hook"
}

clear_stale_state() {
    # After a killed engine: its containerd may still run, or have left a pid file that the
    # next dockerd would trust (and then time out waiting on a socket nobody serves).
    local pidfile="$EXEC_ROOT/containerd/containerd.pid" cpid waited=0
    [ -f "$pidfile" ] || return 0
    cpid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$cpid" ] && [ "$(cat "/proc/$cpid/comm" 2>/dev/null)" = containerd ] \
        && tr '\0' ' ' <"/proc/$cpid/cmdline" 2>/dev/null | grep -qF "$EXEC_ROOT/"; then
        kill -TERM "$cpid" 2>/dev/null || true
        while [ -d "/proc/$cpid" ] && [ "$(awk '{print $3}' "/proc/$cpid/stat" 2>/dev/null)" != Z ]; do
            [ "$waited" -lt 50 ] || { kill -KILL "$cpid" 2>/dev/null || true; break; }
            sleep 0.2
            waited=$((waited + 1))
        done
    fi
    rm -f "$pidfile"
}

# Start "$@" in the background, in a session of its own, holding no descriptor above 2: a
# daemon that kept one (this script's lock on fd 9, or the one a caller's `flock FILE command`
# holds on fd 3) would keep that lock taken for as long as it runs. $! is the daemon's pid.
spawn_detached() {
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-"; fi
        done
        exec setsid "$@"
    ) &
}

start_engine() {
    command -v dockerd >/dev/null || die "dockerd not found (install the Debian package docker.io)"
    command -v docker >/dev/null || die "docker CLI not found (install the Debian package docker.io)"
    mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
    write_hook
    # A stale socket or pid file from a killed engine would make dockerd refuse to start.
    clear_stale_state
    rm -f "$SOCK" "$PIDFILE"
    # The engine outlives the shell or test run that started it, and holds none of its locks.
    spawn_detached env PATH="$HOOK_DIR:$PATH" dockerd \
        --iptables=false --ip6tables=false --bridge=none \
        --storage-driver=vfs \
        --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" \
        -H "unix://$SOCK" --pidfile "$PIDFILE" \
        >"$LOG" 2>&1 </dev/null
    local launcher=$! waited=0
    until engine_answers; do
        if ! kill -0 "$launcher" 2>/dev/null; then
            tail -n 30 "$LOG" >&2 || true
            die "dockerd exited while starting (log: $LOG)"
        fi
        if [ "$waited" -ge $((START_TIMEOUT * 5)) ]; then
            tail -n 30 "$LOG" >&2 || true
            die "dockerd did not answer on $SOCK within ${START_TIMEOUT}s (log: $LOG)"
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
}

import_image() {
    # The script that builds the root filesystem is hashed beside the data root, so a data root
    # kept from an earlier run gets the image again when that script has changed.
    local built
    built=$(sha256sum "$(dirname "$0")/test-rootfs.sh" | cut -c1-16)
    if [ "$(cat "$BASE/image-built" 2>/dev/null)" = "$built" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    bash "$(dirname "$0")/test-rootfs.sh" "$BASE/rootfs.tar"
    docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' "$BASE/rootfs.tar" "$IMAGE" >/dev/null
    rm -f "$BASE/rootfs.tar"
    echo "$built" >"$BASE/image-built"
}

cmd_start() {
    mkdir -p "$BASE"
    # Two test sessions starting at once must not launch two engines on one data root.
    exec 9>"$BASE/lock"
    flock 9
    if ! engine_answers; then
        local pid waited=0
        # An engine that is still starting up or shutting down: wait for it to settle.
        while pid=$(engine_pid) && ! engine_answers; do
            if [ "$waited" -ge $((START_TIMEOUT * 5)) ]; then
                die "dockerd (pid $pid) is running but does not answer on $SOCK (log: $LOG)"
            fi
            sleep 0.2
            waited=$((waited + 1))
        done
        engine_answers || start_engine
    fi
    import_image
    echo "DOCKER_HOST=$DOCKER_HOST"
}

cmd_stop() {
    mkdir -p "$BASE"
    exec 9>"$BASE/lock"
    flock 9
    local pid
    if ! pid=$(engine_pid); then
        rm -f "$SOCK" "$PIDFILE"
        return 0
    fi
    kill -TERM "$pid"
    local waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge 150 ]; then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    rm -f "$SOCK" "$PIDFILE"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
    running) engine_answers ;;
    *) echo "usage: $0 start|stop|env|running" >&2; exit 2 ;;
esac
