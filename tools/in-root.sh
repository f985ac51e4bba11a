#!/usr/bin/env bash
# Run a command inside a Debian root made by tools/debian-root.sh, with this machine's /dev
# and /proc and the given bind mounts, in a private mount namespace (nothing stays mounted
# here afterwards) and with a clean environment:
#
#   tools/in-root.sh ROOT [--bind DIR_IN_ROOT=DIR_HERE] [--ro DIR_IN_ROOT=DIR_HERE]
#                         [--env NAME=VALUE] ... -- COMMAND [ARG...]
#
# A foreign-architecture root (arm64) runs through qemu-user-static's binfmt_misc entry.
# Needs root, or unprivileged user namespaces (then it maps the caller to root inside).
set -euo pipefail

if [[ -z ${GENRE_EDGE_IN_ROOT_NS:-} ]]; then
    ns=(unshare --mount)
    [[ $(id -u) == 0 ]] || ns=(unshare --map-root-user --mount)
    exec env GENRE_EDGE_IN_ROOT_NS=1 "${ns[@]}" "$0" "$@"
fi

root=${1:?usage: $0 ROOT [--bind IN=HERE] [--ro IN=HERE] [--env NAME=VALUE] -- COMMAND}
shift
[[ -x $root/usr/bin/env ]] || { echo "$0: $root is not a Debian root" >&2; exit 2; }
envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
mount --make-rprivate /
mount --rbind /dev "$root/dev"
mount --rbind /proc "$root/proc"
while [[ $# -gt 0 ]]; do
    case $1 in
        --bind | --ro)
            inside=${2%%=*} here=${2#*=}
            mkdir -p "$root$inside"
            mount --bind "$here" "$root$inside"
            [[ $1 == --ro ]] && mount -o remount,bind,ro "$root$inside"
            shift 2 ;;
        --env) envs+=("$2"); shift 2 ;;
        --) shift; break ;;
        *) echo "$0: unknown option '$1'" >&2; exit 2 ;;
    esac
done
[[ $# -gt 0 ]] || { echo "$0: no command given" >&2; exit 2; }
exec chroot "$root" /usr/bin/env -i "${envs[@]}" "$@"
