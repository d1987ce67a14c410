#!/bin/sh
# Install the Debian packages the test suite drives (real PostgreSQL and Redis); only when running as root.
set -eu
PACKAGES="postgresql redis-server chromium fonts-noto-cjk debootstrap espeak-ng sox sip-tester kannel kannel-extras"
if [ "$(id -u)" != 0 ]; then
    echo "system-deps: not root, assuming $PACKAGES are installed"
    exit 0
fi
missing=""
for p in $PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi
