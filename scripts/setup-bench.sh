#!/bin/sh
# Bench-only comparison tools (never runtime dependencies): libbpf-dev for the C consumers,
# bcc (Debian's python3-bpfcc) with Debian's 6.1 kernel headers, which serve for bcc's compile
# when the running kernel ships none. Idempotent; needs root.
set -e
[ "$(id -u)" = 0 ] || { echo "setup-bench: not root, bench comparisons may be skipped"; exit 0; }
export DEBIAN_FRONTEND=noninteractive
release=$(uname -r)
need=""
/usr/bin/python3 -c "import bcc" 2>/dev/null || need="$need python3-bpfcc"
if [ ! -e "/lib/modules/$release/build/include" ] && [ ! -e "/sys/kernel/kheaders.tar.xz" ]; then
    headers=$(ls -d /usr/src/linux-headers-6.1.*-amd64 2>/dev/null | grep -v common | tail -1)
    if [ -z "$headers" ] && [ "$(uname -m)" = x86_64 ]; then
        apt-get update -qq >/dev/null
        headers_pkg=$(apt-cache search --names-only '^linux-headers-6\.1\.0-[0-9]+-amd64$' | cut -d' ' -f1 | sort -V | tail -1)
        need="$need $headers_pkg"
    fi
fi
if [ -n "$need" ]; then
    echo "setup-bench: installing$need"
    apt-get update -qq >/dev/null
    apt-get install -y -qq $need >/dev/null
fi
if [ ! -e "/lib/modules/$release/build/include" ] && [ ! -e "/sys/kernel/kheaders.tar.xz" ]; then
    headers=$(ls -d /usr/src/linux-headers-6.1.*-amd64 2>/dev/null | grep -v common | tail -1)
    if [ -n "$headers" ]; then
        mkdir -p "/lib/modules/$release"
        ln -sfn "$headers" "/lib/modules/$release/build"
        ln -sfn "${headers%-amd64}-common" "/lib/modules/$release/source"
        echo "setup-bench: bcc compiles against $headers (no headers for $release)"
    fi
fi
