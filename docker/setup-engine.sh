#!/usr/bin/env bash
# Make this machine able to build, run and push the image, the way CI does (`.ci/run`).
#
# - A container engine that works: docker when its daemon answers, else podman + runc from
#   Debian (see docker/containers.conf for the two settings podman needs on our machines).
# - Debian's docker-registry, a local OCI registry for the push test of the buildspec.
# - nginx: `serve` runs it in front of gunicorn, also outside the image (tests, `make serve-demo`).
# - Debian's docker-compose (1.29), which the SageMaker Python SDK's local mode drives; with
#   podman, the tests give it a Docker-compatible socket (`podman system service`, DOCKER_HOST).
# - With podman, the dnsname CNI plugin: containers on one network resolve each other's names,
#   as on SageMaker and in the SDK's local mode with instance_count > 1 (algo-1-xxxxx).
# - Without a reachable image registry (our machines, CI), the base image is built from
#   Debian packages with debootstrap and imported as $LOCAL_BASE_IMAGE; `make image` uses it
#   when it exists. Delete that image to rebuild it.
#
# Idempotent: it installs only what is missing (one apt-get update first) and builds the base
# image only when it does not exist. Needs root (or sudo) for apt-get and debootstrap.
set -euo pipefail

LOCAL_BASE_IMAGE=${LOCAL_BASE_IMAGE:-localhost/debian-python:bookworm}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo

missing_packages() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || echo "$pkg"
    done
}

if docker info >/dev/null 2>&1; then
    engine=docker
    wanted=(docker-registry docker-compose nginx)
else
    engine=podman
    wanted=(podman runc debootstrap docker-registry docker-compose nginx golang-github-containernetworking-plugin-dnsname)
fi

mapfile -t missing < <(missing_packages "${wanted[@]}")
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup-engine: installing ${missing[*]}"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$engine" = podman ]; then
    export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
    if ! podman image exists "$LOCAL_BASE_IMAGE"; then
        echo "setup-engine: building $LOCAL_BASE_IMAGE from Debian $DEBIAN_SUITE packages (debootstrap)"
        rootfs=$(mktemp -d /var/tmp/debian-python.XXXXXX)
        trap '$sudo rm -rf "$rootfs"' EXIT
        $sudo debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 \
            || { tail -n 30 "$rootfs.log"; exit 1; }
        rm -f "$rootfs.log"
        # What debian:bookworm-slim leaves out too: apt lists and caches, docs, man pages, locales.
        $sudo rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log \
            "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/info "$rootfs"/usr/share/locale
        $sudo tar -C "$rootfs" -c . | podman import --quiet \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["python3"]' \
            - "$LOCAL_BASE_IMAGE" >/dev/null
    fi
    echo "setup-engine: podman $(podman version --format '{{.Client.Version}}'), base image $LOCAL_BASE_IMAGE"
    echo "setup-engine: use podman with CONTAINERS_CONF=$CONTAINERS_CONF (the Makefile sets it)"
else
    echo "setup-engine: docker answers; the Dockerfile's default base image is pulled from its registry"
fi
