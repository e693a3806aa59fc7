#!/bin/sh
# Installs amlnode as a systemd service on this machine, or removes it.
#
#   install.sh [--from DIR] [--prefix DIR] [--root DIR] [--no-enable]
#   install.sh --uninstall [--purge] [--prefix DIR] [--root DIR]
#
# Installing: creates the system user `amlnode` (in the docker group when there is one), the state
# directory /var/lib/amlnode (0750, the service user's), /etc/amlnode/config.yml from the commented
# default beside this script (never overwriting one that exists), the binaries under PREFIX/bin
# (default /usr/local) and the unit /etc/systemd/system/amlnode.service; then, when systemd is
# running, daemon-reload and enable (not start: the config needs the control plane's address
# first). Running it again changes only what differs, so it doubles as the upgrade: binaries are
# replaced by rename, so a running agent keeps its old binary until it restarts.
#
# Uninstalling stops and disables the service and removes the unit and the binaries; runs still
# going keep going (they are not the agent's to kill). The config and the state directory (runs,
# environments, the node's identity) stay, so a reinstall resumes as the same node. --purge also
# removes them and the service user.
#
# --root DIR applies everything under DIR instead of / (users and groups in DIR/etc/passwd and
# DIR/etc/group, through useradd --prefix), and never touches systemctl: for images being built
# and for tests. --from DIR says where amlnode, amlnode-shim, amlnode-parallel-node and
# amlnode-controlplane are (default:
# the build tree's bin/ beside this script's folder).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
from="$here/../build/bin"
prefix=/usr/local
root=/
action=install
purge=no
enable=yes

usage() {
  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --from) from=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --root) root=$2; shift 2 ;;
    --uninstall) action=uninstall; shift ;;
    --purge) purge=yes; shift ;;
    --no-enable) enable=no; shift ;;
    -h | --help) usage ;;
    *) echo "install.sh: unknown option $1" >&2; usage ;;
  esac
done
if [ "$purge" = yes ] && [ "$action" != uninstall ]; then
  echo "install.sh: --purge goes with --uninstall" >&2
  exit 2
fi
case "$prefix" in /*) ;; *) echo "install.sh: --prefix must be absolute" >&2; exit 2 ;; esac
root=$(cd "$root" 2>/dev/null && pwd) || { echo "install.sh: --root: no such directory" >&2; exit 2; }
[ "$root" = / ] && R= || R=$root

user=amlnode
unit=$R/etc/systemd/system/amlnode.service
config_dir=$R/etc/amlnode
state_dir=$R/var/lib/amlnode
bin_dir=$R$prefix/bin
binaries="amlnode amlnode-shim amlnode-parallel-node amlnode-controlplane"

say() { echo "install.sh: $*"; }

# useradd and friends act on $R/etc through --prefix when installing into a root.
prefixed() {
  command=$1
  shift
  if [ -n "$R" ]; then "$command" --prefix "$R" "$@"; else "$command" "$@"; fi
}

has_user() { grep -q "^$user:" "$R/etc/passwd" 2>/dev/null; }
has_group() { grep -q "^$1:" "$R/etc/group" 2>/dev/null; }
in_group() { grep -q "^$1:[^:]*:[^:]*:\(.*,\)\{0,1\}$user\(,.*\)\{0,1\}$" "$R/etc/group" 2>/dev/null; }

systemd_running() { [ -z "$R" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# Copies $1 to $2 with mode $3 unless $2 already has the same bytes; a new file is renamed into
# place, so a reader (or a running binary) never sees a half-written one.
put() {
  if [ -f "$2" ] && cmp -s "$1" "$2"; then
    chmod "$3" "$2"
    return 0
  fi
  mkdir -p "$(dirname "$2")"
  cp "$1" "$2.new.$$"
  chmod "$3" "$2.new.$$"
  mv -f "$2.new.$$" "$2"
  say "installed $2"
}

ensure_user() {
  if ! has_user; then
    # A group left by an earlier install (or made by the operator) is reused.
    if has_group "$user"; then set -- --gid "$user"; else set -- --user-group; fi
    prefixed useradd --system "$@" --home-dir /var/lib/amlnode --no-create-home \
      --shell /usr/sbin/nologin --comment "amlnode node agent" "$user"
    say "created the system user $user"
  fi
  # Docker jobs are run through dockerd's socket, which the docker group opens.
  if has_group docker && ! in_group docker; then
    prefixed usermod --append --groups docker "$user"
    say "added $user to the docker group"
  fi
}

# Numeric ids from $R/etc, so ownership is right inside a root whose users this system lacks.
owner_ids() {
  uid=$(grep "^$user:" "$R/etc/passwd" | cut -d: -f3)
  gid=$(grep "^$user:" "$R/etc/passwd" | cut -d: -f4)
  echo "$uid:$gid"
}

ensure_directories() {
  ids=$(owner_ids)
  mkdir -p "$state_dir" "$config_dir"
  chown "$ids" "$state_dir"
  chmod 0750 "$state_dir"
  chmod 0755 "$config_dir"
  if [ ! -e "$config_dir/config.yml" ]; then
    put "$here/amlnode.yml" "$config_dir/config.yml" 0640
  else
    say "kept the existing $config_dir/config.yml"
  fi
  # root owns it; the service reads it through its group (it may hold the registration token).
  chown "0:${ids#*:}" "$config_dir/config.yml"
}

install_binaries() {
  for name in $binaries; do
    if [ -f "$from/$name" ]; then
      put "$from/$name" "$bin_dir/$name" 0755
    elif [ "$name" != amlnode-controlplane ]; then
      echo "install.sh: $from/$name not found (build first, or give --from)" >&2
      exit 1
    fi
  done
}

install_unit() {
  tmp=$(mktemp)
  sed "s#/usr/bin/amlnode #$prefix/bin/amlnode #" "$here/amlnode.service" >"$tmp"
  put "$tmp" "$unit" 0644
  rm -f "$tmp"
  if systemd_running; then
    systemctl daemon-reload
    if [ "$enable" = yes ]; then
      systemctl enable amlnode.service
    fi
    say "set control_plane.url in /etc/amlnode/config.yml, then: systemctl start amlnode"
  else
    say "systemd is not running here; enable it later with: systemctl enable --now amlnode"
  fi
}

do_install() {
  [ -f "$from/amlnode" ] || { echo "install.sh: $from/amlnode not found (build first, or give --from)" >&2; exit 1; }
  ensure_user
  install_binaries
  ensure_directories
  install_unit
}

do_uninstall() {
  if systemd_running && [ -f "$unit" ]; then
    systemctl disable --now amlnode.service || true
  fi
  rm -f "$unit"
  for name in $binaries; do rm -f "$bin_dir/$name"; done
  if systemd_running; then systemctl daemon-reload; fi
  say "removed the unit and the binaries"
  if [ "$purge" = yes ]; then
    rm -rf "$state_dir" "$config_dir"
    if has_user; then
      prefixed userdel "$user"
    fi
    # userdel leaves the user's group behind unless login.defs says USERGROUPS_ENAB.
    if has_group "$user"; then
      prefixed groupdel "$user"
    fi
    say "purged $state_dir, $config_dir and the user $user"
  else
    say "kept $state_dir and $config_dir (--purge removes them)"
  fi
}

if [ "$action" = install ]; then do_install; else do_uninstall; fi
