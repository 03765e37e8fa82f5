#!/bin/sh
# Installs what the tests use besides Python packages and mounts bpffs/tracefs.
# Idempotent; needs root. Oracles (bpftool, libbpf, clang) are test-only.
set -e
need=""
for pair in clang-19:clang-19 bpftool:bpftool llvm-objdump-19:llvm-19; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || need="$need $pkg"
done
[ -f /usr/include/bpf/bpf_helpers.h ] || need="$need libbpf-dev"
[ -e /usr/lib/x86_64-linux-gnu/libbpf.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libbpf.so.1 ] || need="$need libbpf1"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v gcc >/dev/null 2>&1 || need="$need gcc"
command -v readelf >/dev/null 2>&1 || need="$need binutils"
# Debian's own python3 carries USDT probes (python:gc__start): the USDT attach test's target.
[ -x /usr/bin/python3 ] || need="$need python3"
if [ -n "$need" ] && [ "$(id -u)" = 0 ]; then
    echo "setup-system: installing$need"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq $need >/dev/null
fi
if [ "$(id -u)" = 0 ]; then
    mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || true
    mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing || true
fi
