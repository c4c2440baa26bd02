#!/usr/bin/env bash
# A private Podman API service for the integration tests and the apply bench.
#
#   scripts/test-podman.sh start   start it (or reuse the one running), write the CDI stand-in, import the test image
#   scripts/test-podman.sh stop    stop it and remove the CDI stand-in (its store stays, so the next start is quick)
#   scripts/test-podman.sh env     print the exports a shell needs: eval "$(... env)"
#
# Everything lives under $GPUCONFIG_PODMAN_DIR (default /tmp/gpuconfig-podman): its own
# containers.conf (runc, cgroupfs, file events, no default ulimits), --root/--runroot/--tmpdir,
# vfs storage and the API socket. A wrapper named `podman` in $GPUCONFIG_PODMAN_DIR/bin adds those
# flags and drops CONTAINER_HOST (which would turn the CLI into a remote client), so
# podman-compose run with that folder first on PATH uses the private store.
#
# GPUs are CDI devices (`--device nvidia.com/gpu=N`). Podman 4.3 reads CDI specs only from
# /etc/cdi, so a stand-in spec is written there under a name of its own
# (gpuconfig-test-<folder name>.yaml) and removed by `stop`. Each of its devices sets
# NVIDIA_VISIBLE_DEVICES=<name> and adds a /dev/nvidia<N> node (a stand-in for the real one), as
# a real GPU's edits would make the card visible to the process.
#
# Needs (Debian): podman, busybox-static; runs as root.
set -euo pipefail

BASE=${GPUCONFIG_PODMAN_DIR:-/tmp/gpuconfig-podman}
SOCK="$BASE/podman.sock"
PIDFILE="$BASE/service.pid"
LOG="$BASE/service.log"
BIN="$BASE/bin"
CONF="$BASE/containers.conf"
CDI_SPEC="/etc/cdi/gpuconfig-test-$(basename "$BASE").yaml"
CDI_DEVICES="0 1 98 99 all GPU-5d2a1c3e-8f4b-4a6d-9e21-7c0b3f9a5500 GPU-0b7e44f2-19c8-4e3a-b6d0-2f5e8a1c0400"
IMAGE=gpuconfig-test/busybox:latest
START_TIMEOUT=${GPUCONFIG_PODMAN_START_TIMEOUT:-60}

die() { echo "test-podman: $*" >&2; exit 1; }

write_config() {
    mkdir -p "$BIN" "$BASE/root" "$BASE/runroot" "$BASE/tmp"
    cat >"$CONF" <<'EOF'
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    cat >"$BIN/podman.tmp" <<EOF
#!/bin/sh
# The private test Podman (scripts/test-podman.sh): always the local CLI, on its own store.
unset CONTAINER_HOST
export CONTAINERS_CONF="$CONF"
exec /usr/bin/podman --root "$BASE/root" --runroot "$BASE/runroot" --tmpdir "$BASE/tmp" \\
    --storage-driver vfs "\$@"
EOF
    chmod 755 "$BIN/podman.tmp"
    mv -f "$BIN/podman.tmp" "$BIN/podman"
}

write_cdi_spec() {
    mkdir -p /etc/cdi
    local dev node=0
    {
        echo 'cdiVersion: "0.5.0"'
        echo 'kind: nvidia.com/gpu'
        echo 'devices:'
        for dev in $CDI_DEVICES; do
            case "$dev" in
                GPU-5d2a*) node=0 ;;
                GPU-0b7e*) node=1 ;;
                *) node=$dev ;;
            esac
            echo "  - name: \"$dev\""
            echo '    containerEdits:'
            echo "      env: [\"NVIDIA_VISIBLE_DEVICES=$dev\"]"
            if [ "$dev" = all ]; then
                # Every GPU, as nvidia-ctk names it: a stack that selects with CUDA_VISIBLE_DEVICES.
                echo "      deviceNodes: [{path: /dev/nvidia0, hostPath: /dev/null}, {path: /dev/nvidia1, hostPath: /dev/null}]"
            else
                echo "      deviceNodes: [{path: /dev/nvidia$node, hostPath: /dev/null}]"
            fi
        done
    } >"$CDI_SPEC.tmp"
    mv -f "$CDI_SPEC.tmp" "$CDI_SPEC"
}

service_answers() {
    curl -fsS --max-time 2 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1
}

service_pid() {
    local pid
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = podman ] || return 1
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
    echo "$pid"
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

start_service() {
    command -v /usr/bin/podman >/dev/null || die "podman not found (install the Debian package podman)"
    rm -f "$SOCK"
    # The service outlives the shell or test run that started it, and holds none of its locks.
    spawn_detached "$BIN/podman" system service --time=0 "unix://$SOCK" >"$LOG" 2>&1 </dev/null
    echo $! >"$PIDFILE"
    local launcher=$! waited=0
    until service_answers; do
        if ! kill -0 "$launcher" 2>/dev/null; then
            tail -n 30 "$LOG" >&2 || true
            die "the podman service exited while starting (log: $LOG)"
        fi
        [ "$waited" -lt $((START_TIMEOUT * 5)) ] || die "no answer on $SOCK within ${START_TIMEOUT}s"
        sleep 0.2
        waited=$((waited + 1))
    done
}

import_image() {
    # The script that builds the root filesystem is hashed beside the data root, so a data root
    # kept from an earlier run gets the image again when that script has changed.
    local built
    built=$(sha256sum "$(dirname "$0")/test-rootfs.sh" | cut -c1-16)
    if [ "$(cat "$BASE/image-built" 2>/dev/null)" = "$built" ] && "$BIN/podman" image exists "$IMAGE"; then
        return 0
    fi
    bash "$(dirname "$0")/test-rootfs.sh" "$BASE/rootfs.tar"
    "$BIN/podman" import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' "$BASE/rootfs.tar" "$IMAGE" >/dev/null
    rm -f "$BASE/rootfs.tar"
    echo "$built" >"$BASE/image-built"
}

cmd_start() {
    mkdir -p "$BASE"
    exec 9>"$BASE/lock"
    flock 9
    write_config
    write_cdi_spec
    service_answers || start_service
    import_image
    echo "CONTAINER_HOST=unix://$SOCK"
    echo "PODMAN_BIN=$BIN"
}

cmd_stop() {
    mkdir -p "$BASE"
    exec 9>"$BASE/lock"
    flock 9
    rm -f "$CDI_SPEC"
    local pid waited=0
    if pid=$(service_pid); then
        kill -TERM "$pid"
        while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 150 ]; do
            sleep 0.2
            waited=$((waited + 1))
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$SOCK" "$PIDFILE"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) echo "export CONTAINER_HOST=unix://$SOCK PATH=$BIN:\$PATH" ;;
    *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
