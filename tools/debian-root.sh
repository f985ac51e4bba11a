#!/usr/bin/env bash
# Build a Debian root with mmdebstrap (Debian packages only), for the tests that need one:
#
#   tools/debian-root.sh ROOT SUITE ARCH PACKAGE[,PACKAGE...]
#
#   tools/debian-root.sh /tmp/arm64 bookworm arm64 python3,python3-venv   # the Pi's arch (qemu)
#   tools/debian-root.sh /tmp/ha trixie amd64 python3,python3-venv        # a newer Python
#
# The mirror is $DEBIAN_MIRROR, else the first Debian mirror of this machine's apt sources.
# The root is built beside ROOT and renamed into place at the end, so an interrupted build
# never leaves a half-made root that a later run would take for a finished one. A foreign
# ARCH needs qemu-user-static with binfmt_misc (mmdebstrap runs the packages' scripts
# through it): see tools/aarch64-root.sh.
set -euo pipefail

[[ $# -eq 4 ]] || { echo "usage: $0 ROOT SUITE ARCH PACKAGES" >&2; exit 2; }
root=$1 suite=$2 arch=$3 packages=$4

mirror_from_apt() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        # deb822: the first URIs line of a stanza whose suites are not a security suite
        uri=$(awk 'BEGIN{RS=""} /Types:.*deb/ && !/-security/ {
                   for (i = 1; i <= NF; i++) if ($i == "URIs:") { print $(i+1); exit } }' "$f")
        [[ -n $uri ]] && { echo "$uri"; return; }
    done
    if [[ -r /etc/apt/sources.list ]]; then
        awk '$1 == "deb" && $0 !~ /-security/ { for (i = 2; i <= NF; i++)
                 if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list
    fi
}

mirror=${DEBIAN_MIRROR:-$(mirror_from_apt)}
[[ -n $mirror ]] || { echo "$0: no Debian mirror in the apt sources: set DEBIAN_MIRROR" >&2; exit 2; }
command -v mmdebstrap >/dev/null || {
    echo "$0: mmdebstrap is not installed: apt-get install mmdebstrap" >&2; exit 2; }

# Certificates this machine trusts locally (a proxy's, say) are trusted in the root too, so
# that pip inside the root reaches the package index as this machine's pip does.
# shellcheck disable=SC2016  # "$1" is the root, expanded by mmdebstrap's hook shell
trust_local_cas='if [ -x "$1/usr/sbin/update-ca-certificates" ]; then
    cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || :
    chroot "$1" update-ca-certificates >/dev/null; fi'

tmp="$root.part"
rm -rf "$tmp"
mkdir -p "$(dirname "$root")"
mode=auto
[[ $(id -u) == 0 ]] && mode=root
# shellcheck disable=SC2016
mmdebstrap --quiet --mode="$mode" --variant=minbase --architectures="$arch" \
    --include="$packages" --aptopt='Acquire::Retries "3"' \
    --customize-hook="$trust_local_cas" \
    --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages' \
    "$suite" "$tmp" "$mirror"
rm -rf "$root"
mv "$tmp" "$root"
