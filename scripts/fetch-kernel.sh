#!/usr/bin/env bash
# Fetches and unpacks Debian's linux-source package into the build directory
# through a private apt sources list; the system's apt configuration is never
# touched. Idempotent.
set -euo pipefail
. "$(dirname "$0")/config.sh"

stamp=$KSRC_DIR/.memreg-pristine
[ -f "$stamp" ] && exit 0

apt_dir=$MEMREG_BUILD/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/deb"
echo "deb http://deb.debian.org/debian $KERNEL_DEB_SUITE main" >"$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
	-o Debug::NoLocking=1 -o APT::Sandbox::User=root)

deb=$(ls "$apt_dir/deb/${KERNEL_DEB_PKG}_"*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
	log "fetching $KERNEL_DEB_PKG from $KERNEL_DEB_SUITE"
	apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 ||
		die "cannot read the $KERNEL_DEB_SUITE package lists"
	(cd "$apt_dir/deb" && apt-get "${apt_opts[@]}" download -qq "$KERNEL_DEB_PKG" >/dev/null 2>&1) ||
		die "$KERNEL_DEB_PKG is no longer in $KERNEL_DEB_SUITE; set KERNEL_SERIES in scripts/config.sh or pass KDIR=/path/to/a/rust/enabled/tree"
	deb=$(ls "$apt_dir/deb/${KERNEL_DEB_PKG}_"*.deb | head -n1)
fi

log "unpacking $(basename "$deb")"
rm -rf "$apt_dir/x" "$KSRC_DIR"
mkdir -p "$apt_dir/x"
dpkg-deb -x "$deb" "$apt_dir/x"
tar -C "$MEMREG_BUILD" -xf "$apt_dir/x/usr/src/$KERNEL_DEB_PKG.tar.xz"
mv "$MEMREG_BUILD/$KERNEL_DEB_PKG" "$KSRC_DIR"
rm -rf "$apt_dir/x"
touch "$stamp"
