#!/usr/bin/env bash
# =============================================================================
# scripts/linux-assets.sh -- build the Linux guest that skvm boots
# =============================================================================
#
#   bash scripts/linux-assets.sh [OUTDIR]       (default OUTDIR: guests/build/linux)
#
# Produces, from Debian 12 packages only (guests/linux/README.md explains them):
#   OUTDIR/bzImage     Debian's amd64 kernel, the /boot/vmlinuz-* of the
#                      versioned linux-image-*-amd64 package that
#                      linux-image-amd64 depends on
#   OUTDIR/vmlinux     the uncompressed ELF64 x86-64 kernel inside that bzImage
#   OUTDIR/initrd.img  a gzip-compressed newc cpio: static busybox, the
#                      virtio and ext4 modules, and guests/linux/init as /init
#   OUTDIR/manifest.txt  kernel version, payload format, module load order
#
# The .deb files are fetched with `apt-get download` into a cache
# (guests/build/linux/cache, or $SKVM_LINUX_CACHE) and unpacked with `dpkg -x`
# into a temporary tree: nothing is installed into the host's /boot.
# Idempotent and incremental: a cached .deb is not fetched again, and an
# output is rebuilt only when it is missing or older than one of its inputs
# (the .deb files, guests/linux/init, this script).
#
# Environment:
#   SKVM_LINUX_CACHE   where the .deb files are kept
#   SKVM_KERNEL_PKG    a versioned kernel package to use instead of
#                      linux-image-amd64's dependency, e.g. linux-image-6.1.0-57-amd64
#
# Needs: apt-get and dpkg-deb (any Debian), xz-utils, cpio, kmod (depmod),
# gzip; missing tools are installed with apt-get (as root).
# =============================================================================
set -Eeuo pipefail
shopt -s nullglob

PROG=linux-assets
say() { echo "$PROG: $*"; }
die() { echo "$PROG: error: $*" >&2; exit 1; }
# shellcheck disable=SC2154 # rc is assigned inside the trap
trap 'rc=$?; echo "$PROG: error: command failed with status $rc (line $LINENO): $BASH_COMMAND" >&2; exit $rc' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF=$ROOT/scripts/linux-assets.sh
INIT_SRC=$ROOT/guests/linux/init
OUT=${1:-$ROOT/guests/build/linux}
CACHE=${SKVM_LINUX_CACHE:-$ROOT/guests/build/linux/cache}
KERNEL_META=linux-image-amd64
BUSYBOX_PKG=busybox-static

# The modules the initramfs loads. Their dependencies (modules.dep) and
# pre-soft-dependencies (modules.softdep, e.g. ext4 -> crypto-crc32c) are
# added automatically and loaded first. A module built into the kernel
# (modules.builtin) is left out; one that exists neither way is an error.
MODULES=(
	virtio virtio_ring
	virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
	virtio_mmio
	virtio_blk
	failover net_failover virtio_net
	ext4
)

# The busybox applets /init and the tests rely on. Every applet of the
# Debian binary gets a link; a missing one from this list is an error.
APPLETS=(sh mount mkdir cat echo insmod poweroff reboot ls sleep dmesg uname
	nproc free grep ip ifconfig ping nc dd sync md5sum sha256sum hexdump tr
	head tail wc sed awk cut setsid cttyhack mke2fs)

export PATH=$PATH:/usr/sbin:/sbin
export LC_ALL=C

# --- timing -------------------------------------------------------------------
T_START=${EPOCHREALTIME/./}
T_STEP=$T_START
elapsed() { # microseconds -> "1.23s"
	local us=$1
	printf '%d.%02ds' $((us / 1000000)) $((us % 1000000 / 10000))
}
step() { # print a step line with the time since the previous step
	local now=${EPOCHREALTIME/./}
	say "$* [$(elapsed $((now - T_STEP)))]"
	T_STEP=$now
}

# --- apt ------------------------------------------------------------------------
APT_UPDATED=0
apt_update() {
	[ "$APT_UPDATED" = 1 ] && return 0
	[ "$(id -u)" = 0 ] || die "the apt lists need updating; run 'apt-get update' as root"
	say "apt-get update (the apt lists lack a package)"
	apt-get update -qq || die "apt-get update failed"
	APT_UPDATED=1
}

# need_tools CMD:PACKAGE...: install the packages whose command is missing.
need_tools() {
	local pair missing=()
	for pair; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" = 0 ] || die "missing tools; as root run: apt-get install ${missing[*]}"
	say "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
		apt_update
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
			die "apt-get install ${missing[*]} failed"
	fi
	for pair; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || die "'${pair%%:*}' still missing after installing ${pair#*:}"
	done
}

# apt_load PACKAGE...: remember the Version, Depends and Size fields of
# the candidate versions, as APT_FIELD[PACKAGE/FIELD]. One apt-cache call
# for all of them: each call takes about a second where apt keeps no
# pkgcache.bin (Debian's container images).
declare -A APT_FIELD=()
apt_load() {
	local pkg field value
	while IFS=$'\t' read -r pkg field value; do
		APT_FIELD[$pkg/$field]=$value
	done < <({ apt-cache show --no-all-versions "$@" 2>/dev/null || true; } | awk '
		/^Package: / { pkg = $2 }
		/^(Version|Depends|Size): / {
			field = $1; sub(/:$/, "", field)
			value = $0; sub(/^[^:]*: /, "", value)
			if (!((pkg, field) in seen)) { seen[pkg, field] = 1; print pkg "\t" field "\t" value }
		}')
}
apt_field() { # PACKAGE FIELD
	echo "${APT_FIELD[$1/$2]:-}"
}

# pkg_version PACKAGE: sets VERSION to the candidate version (running
# apt-get update once if apt does not know the package).
pkg_version() {
	[ -n "${APT_FIELD[$1/Version]:-}" ] || apt_load "$1"
	if [ -z "${APT_FIELD[$1/Version]:-}" ]; then
		apt_update
		apt_load "$1"
	fi
	VERSION=${APT_FIELD[$1/Version]:-}
	[ -n "$VERSION" ] || die "package $1 is not in the apt lists (is this Debian 12 with its main archive?)"
}

# fetch_deb PACKAGE: make sure the candidate version's .deb is in $CACHE;
# sets DEB to its path.
fetch_deb() {
	local pkg=$1 ver tmp debs size
	pkg_version "$pkg"
	ver=$VERSION
	DEB=$CACHE/${pkg}_${ver//:/%3a}_amd64.deb
	if [ -s "$DEB" ] && dpkg-deb --field "$DEB" Package >/dev/null 2>&1; then
		step "cached $(basename "$DEB")"
		return 0
	fi
	size=$(apt_field "$pkg" Size)
	say "downloading $pkg $ver ($(awk -v b="${size:-0}" 'BEGIN { printf "%.1f MB", b / 1e6 }'))"
	mkdir -p "$CACHE"
	tmp=$(mktemp -d "$CACHE/.download.XXXXXX")
	local sandbox=()
	[ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
	if ! (cd "$tmp" && apt-get -qq "${sandbox[@]}" download "$pkg=$ver"); then
		rm -rf "$tmp"
		die "apt-get download $pkg=$ver failed"
	fi
	debs=("$tmp"/*.deb)
	[ ${#debs[@]} -eq 1 ] || { rm -rf "$tmp"; die "apt-get download $pkg left no single .deb"; }
	[ "$(dpkg-deb --field "${debs[0]}" Package)" = "$pkg" ] || { rm -rf "$tmp"; die "${debs[0]} is not $pkg"; }
	# apt gives the file the server's modification time; the download time
	# is what makes outputs built from an older package stale.
	touch "${debs[0]}"
	rm -f "$CACHE/${pkg}"_*.deb # older versions
	mv "${debs[0]}" "$DEB"
	rmdir "$tmp"
	step "downloaded $(basename "$DEB")"
}

# stale OUTPUT INPUT...: true when OUTPUT is missing or older than an input.
stale() {
	local out=$1 in
	shift
	[ -e "$out" ] || return 0
	for in; do [ "$in" -nt "$out" ] && return 0; done
	return 1
}

# --- reading binary files -------------------------------------------------------
u8() { od -An -tu1 -j "$2" -N 1 "$1" | tr -d ' \n'; }
u16() { od -An -tu2 --endian=little -j "$2" -N 2 "$1" | tr -d ' \n'; }
u32() { od -An -tu4 --endian=little -j "$2" -N 4 "$1" | tr -d ' \n'; }
hexbytes() { od -An -tx1 -j "$2" -N "$3" "$1" | tr -d ' \n'; }

# payload_info BZIMAGE: sets PAYLOAD_START, PAYLOAD_LEN and PAYLOAD_FMT.
# The x86 boot protocol (Documentation/x86/boot.rst), version 2.08 and
# later, says where the compressed kernel is: setup_sects (0x1f1) sectors of
# real-mode setup code follow the boot sector, then the protected-mode part,
# in which the payload starts at payload_offset (0x248) and is
# payload_length (0x24c) bytes long. Its magic number names the compressor.
payload_info() {
	local f=$1 setup_sects version magic
	[ "$(hexbytes "$f" 514 4)" = 48647253 ] || die "$f: no 'HdrS' boot header at 0x202: not a bzImage"
	version=$(u16 "$f" 518)
	[ "$version" -ge $((0x208)) ] || die "$f: boot protocol $(printf %#x "$version") is older than 2.08 (no payload fields)"
	setup_sects=$(u8 "$f" 497)
	[ "$setup_sects" -ne 0 ] || setup_sects=4
	PAYLOAD_START=$(((setup_sects + 1) * 512 + $(u32 "$f" 584)))
	PAYLOAD_LEN=$(u32 "$f" 588)
	[ "$PAYLOAD_LEN" -gt 4 ] && [ $((PAYLOAD_START + PAYLOAD_LEN)) -le "$(stat -c %s "$f")" ] ||
		die "$f: payload ($PAYLOAD_START + $PAYLOAD_LEN bytes) does not fit in the file"
	magic=$(hexbytes "$f" "$PAYLOAD_START" 6)
	case $magic in
	1f8b08*) PAYLOAD_FMT=gzip ;;
	fd377a585a00) PAYLOAD_FMT=xz ;;
	28b52ffd*) PAYLOAD_FMT=zstd ;;
	02214c18*) PAYLOAD_FMT=lz4 ;;
	425a68*) PAYLOAD_FMT=bzip2 ;;
	5d0000*) PAYLOAD_FMT=lzma ;;
	894c5a4f*) PAYLOAD_FMT=lzo ;;
	*) die "$f: unknown compressed payload magic $magic at offset $PAYLOAD_START" ;;
	esac
}

# extract_vmlinux BZIMAGE OUT: what the kernel's scripts/extract-vmlinux does,
# but at the exact offset the header gives. The payload's last 4 bytes are
# the uncompressed size (gzip's own ISIZE; the build appends them for the
# other compressors), which checks the result.
extract_vmlinux() {
	local f=$1 out=$2 body expect got
	payload_info "$f"
	local tool
	case $PAYLOAD_FMT in
	gzip) need_tools gzip:gzip; tool=(gzip -dc) ;;
	xz) need_tools xz:xz-utils; tool=(xz -dc --single-stream) ;;
	lzma) need_tools xz:xz-utils; tool=(xz -dc --format=lzma) ;;
	zstd) need_tools zstd:zstd; tool=(zstd -dcq) ;;
	lz4) need_tools lz4:lz4; tool=(lz4 -dc) ;;
	bzip2) need_tools bzip2:bzip2; tool=(bzip2 -dc) ;;
	lzo) need_tools lzop:lzop; tool=(lzop -dc) ;;
	esac
	body=$PAYLOAD_LEN
	[ "$PAYLOAD_FMT" = gzip ] || body=$((PAYLOAD_LEN - 4))
	expect=$(u32 "$f" $((PAYLOAD_START + PAYLOAD_LEN - 4)))
	dd if="$f" iflag=skip_bytes,count_bytes skip="$PAYLOAD_START" count="$body" bs=1M status=none |
		"${tool[@]}" >"$out.tmp" ||
		die "$f: ${tool[*]} failed on the $PAYLOAD_FMT payload"
	got=$(stat -c %s "$out.tmp")
	[ "$got" = "$expect" ] || die "$f: decompressed $got bytes, the payload says $expect"
	# ELF header: \x7fELF, ELFCLASS64, little-endian, ET_EXEC, EM_X86_64.
	[ "$(hexbytes "$out.tmp" 0 4)" = 7f454c46 ] || die "$f: the payload is not an ELF file"
	[ "$(u8 "$out.tmp" 4)" = 2 ] && [ "$(u8 "$out.tmp" 5)" = 1 ] &&
		[ "$(u16 "$out.tmp" 16)" = 2 ] && [ "$(u16 "$out.tmp" 18)" = 62 ] ||
		die "$f: the payload is an ELF file but not an ELF64 little-endian x86-64 executable"
	mv "$out.tmp" "$out"
}

# --- start ------------------------------------------------------------------------
[ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] || die "this needs a Debian amd64 host"
[ -r "$INIT_SRC" ] || die "$INIT_SRC is missing"
mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd)
WORK=
cleanup() { # also after a failure: no half-written output stays behind
	[ -z "$WORK" ] || rm -rf "$WORK"
	rm -f "$OUT"/{bzImage,vmlinux,initrd.img,manifest.txt}.tmp
}
trap cleanup EXIT

need_tools xz:xz-utils cpio:cpio depmod:kmod gzip:gzip od:coreutils

# --- 1. packages --------------------------------------------------------------------
KERNEL_PKG=${SKVM_KERNEL_PKG:-}
apt_load "$BUSYBOX_PKG" "${KERNEL_PKG:-$KERNEL_META}"
if [ -z "$KERNEL_PKG" ]; then
	pkg_version "$KERNEL_META"
	KERNEL_PKG=$(apt_field "$KERNEL_META" Depends | sed 's/[,|]/\n/g' | sed 's/^ *//; s/ .*//' |
		grep -E '^linux-image-[0-9][0-9.]*-[0-9]+-amd64$' | head -n 1 || true)
	[ -n "$KERNEL_PKG" ] || die "$KERNEL_META depends on no linux-image-VERSION-amd64 package"
fi
KVER=${KERNEL_PKG#linux-image-} # the kernel's uname -r, e.g. 6.1.0-57-amd64
pkg_version "$KERNEL_PKG"
step "kernel package $KERNEL_PKG $VERSION (uname -r $KVER)"
fetch_deb "$KERNEL_PKG"
KERNEL_DEB=$DEB
fetch_deb "$BUSYBOX_PKG"
BUSYBOX_DEB=$DEB

# The kernel package, unpacked once, only when an output needs it.
KTREE=
unpack_kernel() {
	[ -n "$KTREE" ] && return 0
	WORK=$(mktemp -d "$OUT/.work.XXXXXX")
	KTREE=$WORK/kernel
	dpkg -x "$KERNEL_DEB" "$KTREE" || die "dpkg -x $KERNEL_DEB failed"
	[ -d "$KTREE/lib/modules/$KVER" ] || die "$KERNEL_DEB has no lib/modules/$KVER"
	step "unpacked $(basename "$KERNEL_DEB") ($(du -sm "$KTREE" | cut -f1) MiB)"
}

# --- 2. bzImage ---------------------------------------------------------------------
if stale "$OUT/bzImage" "$KERNEL_DEB" "$SELF"; then
	unpack_kernel
	vmlinuz=("$KTREE"/boot/vmlinuz-*)
	[ ${#vmlinuz[@]} -eq 1 ] || die "$KERNEL_DEB: expected one boot/vmlinuz-*, found ${#vmlinuz[@]}"
	cp "${vmlinuz[0]}" "$OUT/bzImage.tmp"
	mv "$OUT/bzImage.tmp" "$OUT/bzImage"
	step "bzImage <- ${vmlinuz[0]#"$KTREE"/} ($(stat -c %s "$OUT/bzImage") bytes)"
else
	step "bzImage is up to date"
fi

# --- 3. vmlinux ---------------------------------------------------------------------
if stale "$OUT/vmlinux" "$OUT/bzImage" "$SELF"; then
	extract_vmlinux "$OUT/bzImage" "$OUT/vmlinux"
	step "vmlinux <- $PAYLOAD_FMT payload at offset $PAYLOAD_START of bzImage ($(stat -c %s "$OUT/vmlinux") bytes, ELF64 x86-64)"
else
	payload_info "$OUT/bzImage"
	step "vmlinux is up to date"
fi

# --- 4. initrd.img ------------------------------------------------------------------

# resolve_modules MODDIR: sets LOAD_ORDER (module names) and MODPATH[name]
# (path relative to MODDIR) from modules.dep, modules.softdep, modules.alias
# and modules.builtin. Debian's package ships no modules.dep (its postinst
# runs depmod), so depmod writes them into the temporary tree first.
declare -A MODPATH=() DEPS=() SOFTPRE=() BUILTIN=() ALIASES=() STATE=()
LOAD_ORDER=()
modname() { # path or file name -> module name ("-" becomes "_")
	local n=${1##*/}
	n=${n%%.ko*}
	REPLY=${n//-/_}
}
visit() {
	local m=$1 d i deps
	case ${STATE[$m]:-} in
	done) return 0 ;;
	busy) die "module dependency cycle through $m" ;;
	esac
	STATE[$m]=busy
	for d in ${SOFTPRE[$m]:-}; do visit "$d"; done
	# modules.dep lists every (transitive) dependency; modprobe loads them
	# from the last to the first, and so do we.
	read -ra deps <<<"${DEPS[$m]:-}"
	for ((i = ${#deps[@]} - 1; i >= 0; i--)); do visit "${deps[i]}"; done
	STATE[$m]='done'
	LOAD_ORDER+=("$m")
}
resolve_modules() {
	local dir=$1 line key rest w n names section
	if [ ! -s "$dir/modules.dep" ] || [ ! -e "$dir/modules.softdep" ]; then
		depmod -b "${dir%/lib/modules/*}" "$KVER" || die "depmod failed on the unpacked kernel package"
		step "depmod wrote modules.dep (the package ships none)"
	fi
	while IFS= read -r line; do
		key=${line%%:*}
		rest=${line#*:}
		modname "$key"
		n=$REPLY
		MODPATH[$n]=$key
		names=
		for w in $rest; do modname "$w"; names+=" $REPLY"; done
		DEPS[$n]=$names
	done <"$dir/modules.dep"
	while IFS= read -r line; do
		modname "$line"
		BUILTIN[$REPLY]=1
	done <"$dir/modules.builtin"
	while read -r w key n; do
		[ "$w" = alias ] && [ -n "$n" ] && ALIASES[$key]+=" $n"
	done <"$dir/modules.alias"
	# "softdep ext4 pre: crypto-crc32c": names or aliases to load first.
	while read -r w key rest; do
		[ "$w" = softdep ] || continue
		modname "$key"
		n=$REPLY
		section=
		for w in $rest; do
			case $w in
			pre: | post:) section=$w ;;
			*)
				[ "$section" = pre: ] || continue
				modname "$w"
				if [ -n "${MODPATH[$REPLY]:-}" ]; then
					SOFTPRE[$n]+=" $REPLY"
				elif [ -n "${ALIASES[$w]:-}" ]; then
					SOFTPRE[$n]+="${ALIASES[$w]}"
				fi # else built in, or provided by nothing: modprobe ignores it too
				;;
			esac
		done
	done <"$dir/modules.softdep"
	for w in "${MODULES[@]}"; do
		modname "$w"
		n=$REPLY
		if [ -n "${MODPATH[$n]:-}" ]; then
			visit "$n"
		elif [ -n "${BUILTIN[$n]:-}" ]; then
			say "module $n is built into the kernel: not packed"
		else
			die "module $n is neither a module nor built into kernel $KVER"
		fi
	done
}

if stale "$OUT/initrd.img" "$KERNEL_DEB" "$BUSYBOX_DEB" "$INIT_SRC" "$SELF"; then
	unpack_kernel
	STAGE=$WORK/initramfs
	mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,lib/modules,dev,proc,sys,tmp,root,etc,mnt,run}

	# busybox, with a link for every applet it has.
	dpkg -x "$BUSYBOX_DEB" "$WORK/busybox"
	BB=$WORK/busybox/bin/busybox
	[ -x "$BB" ] || die "$BUSYBOX_DEB has no executable bin/busybox"
	cp "$BB" "$STAGE/bin/busybox"
	mapfile -t applets < <("$BB" --list-full)
	[ ${#applets[@]} -gt 100 ] || die "busybox --list-full listed only ${#applets[@]} applets"
	for a in "${applets[@]}"; do
		[ "$a" = bin/busybox ] && continue
		case $a in */*) [ -d "$STAGE/${a%/*}" ] || mkdir -p "$STAGE/${a%/*}" ;; esac
		ln -sf /bin/busybox "$STAGE/$a"
	done
	declare -A have=()
	for a in "${applets[@]}"; do have[${a##*/}]=1; done
	for a in "${APPLETS[@]}"; do
		[ -n "${have[$a]:-}" ] || die "busybox from $BUSYBOX_PKG has no '$a' applet"
	done
	step "busybox $(dpkg-deb --field "$BUSYBOX_DEB" Version): ${#applets[@]} applets linked"

	# The modules, uncompressed, and their load order.
	MODDIR=$KTREE/lib/modules/$KVER
	resolve_modules "$MODDIR"
	: >"$STAGE/lib/modules/load-order"
	for n in "${LOAD_ORDER[@]}"; do
		src=$MODDIR/${MODPATH[$n]}
		base=${src##*/}
		case $base in
		*.ko) cp "$src" "$STAGE/lib/modules/$base" ;;
		*.ko.xz) base=${base%.xz}; xz -dc "$src" >"$STAGE/lib/modules/$base" ;;
		*.ko.gz) base=${base%.gz}; gzip -dc "$src" >"$STAGE/lib/modules/$base" ;;
		*.ko.zst) need_tools zstd:zstd; base=${base%.zst}; zstd -dcq "$src" >"$STAGE/lib/modules/$base" ;;
		*) die "unknown module file type: $src" ;;
		esac
		echo "$base" >>"$STAGE/lib/modules/load-order"
	done
	step "modules, in load order: ${LOAD_ORDER[*]}"

	# /init and the rest.
	install -m 0755 "$INIT_SRC" "$STAGE/init"
	echo "root:x:0:0:root:/root:/bin/sh" >"$STAGE/etc/passwd"
	echo "root:x:0:" >"$STAGE/etc/group"
	printf 'kernel %s (%s %s)\nbusybox %s\n' "$KVER" "$KERNEL_PKG" \
		"$(dpkg-deb --field "$KERNEL_DEB" Version)" "$(dpkg-deb --field "$BUSYBOX_DEB" Version)" \
		>"$STAGE/etc/skvm-initramfs-release"
	# The kernel's own built-in initramfs has /dev/console too; this one
	# makes sure /init starts with the console open either way.
	[ "$(id -u)" = 0 ] && mknod -m 0600 "$STAGE/dev/console" c 5 1
	chmod 1777 "$STAGE/tmp"
	chmod 0700 "$STAGE/root"

	# Same inputs, same bytes: fixed timestamps, sorted names, root owner,
	# no name or time in the gzip header.
	find "$STAGE" -exec touch -h -d @0 {} +
	(cd "$STAGE" && find . -mindepth 1 | sed 's|^\./||' | sort |
		cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9 -n >"$OUT/initrd.img.tmp"
	mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
	step "initrd.img: $(find "$STAGE" -mindepth 1 | wc -l) entries, $(stat -c %s "$OUT/initrd.img") bytes"
else
	step "initrd.img is up to date"
fi

# --- 5. manifest ----------------------------------------------------------------------
order=$(gzip -dc "$OUT/initrd.img" | cpio -i --quiet --to-stdout lib/modules/load-order | sed 's/\.ko$//' | tr '\n' ' ')
{
	echo "kernel-package: $KERNEL_PKG $(dpkg-deb --field "$KERNEL_DEB" Version)"
	echo "kernel-release: $KVER"
	echo "bzImage-payload: $PAYLOAD_FMT"
	echo "busybox-package: $BUSYBOX_PKG $(dpkg-deb --field "$BUSYBOX_DEB" Version)"
	echo "module-load-order: ${order% }"
} >"$OUT/manifest.txt.tmp"
if cmp -s "$OUT/manifest.txt.tmp" "$OUT/manifest.txt"; then
	rm "$OUT/manifest.txt.tmp"
else
	mv "$OUT/manifest.txt.tmp" "$OUT/manifest.txt"
fi

if [ -n "$WORK" ]; then
	rm -rf "$WORK"
	WORK=
	step "removed the temporary tree"
fi
T_STEP=$T_START
step "done: $OUT/{bzImage,vmlinux,initrd.img}"
