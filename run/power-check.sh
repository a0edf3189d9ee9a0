#!/usr/bin/env bash
# mpicolor on IBM Power (ppc64le) by emulation, with Debian's own packages: bash run/power-check.sh
#
# Makes (or reuses) a ppc64el Debian chroot run by qemu-user, installs Debian's Python stack and MPI in it,
# cross-compiles on this host what Debian does not package (simplejpeg), and installs mpicolor with
# --no-deps. Then, emulated: the demo (three tarballs and an H.264 clip) with `mpiexec -n 2`, the portable tests (`pytest -m portable`), and
# the demo's palettes compared with the same run on this host. Prints a summary; exits non-zero when a step
# fails. Needs root on an amd64 Debian host (apt-get, binfmt_misc, chroot). Far too slow for CI: run it after
# changing a dependency or its floor, the kernels, the decoder or the MPI code.
#
#   MPICOLOR_POWER_CACHE    the chroot and the builds, kept between runs and clones
#                           (default ${XDG_CACHE_HOME:-~/.cache}/mpicolor-power)
#   MPICOLOR_POWER_RELEASE  the Debian release (default bookworm: see docs/power.md)
#   MPICOLOR_POWER_MIRROR   the Debian mirror (default: the first one in this host's apt sources)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
release="${MPICOLOR_POWER_RELEASE:-bookworm}"
cache="${MPICOLOR_POWER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mpicolor-power}"
root="$cache/$release-ppc64el"
venv=/opt/mpicolor-venv       # in the chroot: Debian's packages plus mpicolor and simplejpeg
checkout=/root/mpicolor       # in the chroot: a copy of this checkout
# Debian's Python stack and MPI (python3-mpi4py brings the release's default MPI); PyAV for the demo's video
# (PyPI has no ppc64le wheel of it); headers for the cross build
packages=(python3-numpy python3-numba python3-sklearn python3-opencv python3-h5py python3-mpi4py python3-av
          python3-threadpoolctl python3-pytest python3-pytest-timeout python3-venv python3-setuptools python3-wheel
          libpython3-dev git)
host_tools=(qemu-user-static binfmt-support mmdebstrap arch-test gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross
            cmake make)
# Open MPI (Debian's default MPI on ppc64el) refuses root and more ranks than cores unless told
chroot_env=(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
            OMPI_MCA_hwloc_base_binding_policy=none PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe
            NUMBA_CACHE_DIR=/var/cache/mpicolor-numba)

mkdir -p "$cache"
exec 9>"$cache/lock"
flock -n 9 || { echo "power-check: another run holds $cache/lock" >&2; exit 1; }
log="$cache/last-run.log"
: >"$log"
started=$SECONDS
summary=()
failed=0

step() {  # step NAME COMMAND...: runs and times one step, its output in $log, and notes it for the summary
    local name="$1" start=$SECONDS status
    shift
    echo "power-check: $name ..." >&2
    echo "==== $name" >>"$log"
    set +e
    (set -e; "$@") >>"$log" 2>&1  # a subshell: `set -e` would be ignored in a function tested with ||
    status=$?
    set -e
    summary+=("$(printf '%-58s %5d s  %s' "$name" $((SECONDS - start)) \
        "$([ "$status" = 0 ] && echo ok || echo "FAILED (status $status, see $log)")")")
    [ "$status" = 0 ] || failed=1
    return "$status"
}

print_summary() {
    echo
    echo "power-check summary: Debian $release ppc64el under $(qemu-ppc64le-static --version | head -1)"
    printf '%s\n' "${summary[@]}"
    [ ! -s "$cache/versions.txt" ] || awk -F'\t' 'NR == FNR {host[$1] = $2; next}
        FNR == 1 {printf "  %-14s %-34s %s\n", "versions", "ppc64le (Debian)", "x86_64 (PyPI)"}
        {printf "  %-14s %-34s %s\n", $1, $2, host[$1]}' "$cache/host-versions.txt" "$cache/versions.txt"
    if [ -s "$cache/palettes.txt" ]; then
        echo "palettes, ppc64le against x86_64:"
        sed 's/^/  /' "$cache/palettes.txt"
    fi
    echo "total $((SECONDS - started)) s: $([ "$failed" = 0 ] && echo PASSED || echo FAILED)"
}
trap print_summary EXIT

in_chroot() {  # runs a command in the chroot (emulated) with its own /proc, /sys, /dev and /dev/shm
    unshare --mount --propagation private -- sh -c 'root="$1"; shift
        mount -t proc proc "$root/proc" && mount --rbind /sys "$root/sys" && mount --rbind /dev "$root/dev" &&
        mount -t tmpfs tmpfs "$root/dev/shm" && exec chroot "$root" "$@"' sh "$root" \
        env -i HOME=/root LANG=C.UTF-8 PATH="$venv/bin:/usr/sbin:/usr/bin:/sbin:/bin" "${chroot_env[@]}" "$@"
}

host_tools() {
    local missing=() tool
    for tool in "${host_tools[@]}"; do dpkg -s "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    [ -e /proc/sys/fs/binfmt_misc/status ] || mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
    [ -e /proc/sys/fs/binfmt_misc/qemu-ppc64le ] || update-binfmts --enable qemu-ppc64le
    grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-ppc64le
}

make_chroot() {  # mmdebstrap: apt resolves and downloads on this host; only dpkg runs emulated
    local mirror="${MPICOLOR_POWER_MIRROR:-}"
    [ -n "$mirror" ] || mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources || true)"
    [ -n "$mirror" ] || mirror="$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list || true)"
    [ -n "$mirror" ] || { echo "no Debian mirror in this host's apt sources: set MPICOLOR_POWER_MIRROR"; return 1; }
    if grep -q " $root" /proc/mounts; then echo "$root has mounts: not removing it"; return 1; fi
    rm -rf "$root" "$root.partial"
    # eatmydata: dpkg's fsync of every file would cost minutes
    nice mmdebstrap --variant=apt --arch=ppc64el --include="$(IFS=,; echo "${packages[*]}")" \
        --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$release" "$root.partial" "$mirror"
    echo "${packages[*]}" >"$root.partial/.mpicolor-packages"
    mv "$root.partial" "$root"
}

update_chroot() {  # packages added to the list since the chroot was made
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    in_chroot apt-get update -qq
    in_chroot env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
    echo "${packages[*]}" >"$root/.mpicolor-packages"
}

# the oldest PyAV mpicolor reads videos with (mpicolor.state.videos.PYAV_FLOOR)
pyav_floor="$(sed -n 's/^PYAV_FLOOR = \([0-9]*\).*/\1/p' "$repo/mpicolor/state/videos.py")"

host_reference() {  # the demo on this host (x86_64, PyPI's wheels), into $cache/demo/x86_64: tarballs and a video
    (
        export MPICOLOR_EXTRAS="${MPICOLOR_EXTRAS:-mpich,video}"
        source "$repo/run/env.sh"
        rm -rf "$cache/demo"
        mkdir -p "$cache/demo/input"
        (cd "$repo/tests" && python -c 'import sys, helpers; helpers.pack_scenes(sys.argv[1])' "$cache/demo/input")
        # a video too, when the chroot's PyAV is one mpicolor reads videos with (Debian 12's python3-av 10 is not)
        if in_chroot python3 -c "import sys, av; sys.exit(int(av.__version__.split('.')[0]) < $pyav_floor)"; then
            (cd "$repo/tests" && python -c 'import sys, helpers; helpers.make_clip(sys.argv[1], "h264")' \
                "$cache/demo/input/clip.mp4")
        else
            echo "power-check: no video in the demo: the chroot's PyAV is older than $pyav_floor" >&2
        fi
        mpiexec -n 2 mpicolor run "$cache/demo/input" "$cache/demo/x86_64" --checkpoint-every 10
        python "$repo/run/power/versions.py" >"$cache/host-versions.txt"
    )
}

chroot_python() {  # a sysconfig or numpy path of the chroot's Python, as seen from this host
    echo "$root$(in_chroot python3 -c "$1")"
}

install_simplejpeg() {  # cross-compiled, into the chroot's venv
    local site
    [ -x "$root$venv/bin/python" ] || in_chroot python3 -m venv --system-site-packages "$venv"
    site="$(in_chroot "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    bash "$repo/run/power/simplejpeg.sh" "$simplejpeg_version" \
        "$(chroot_python 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
        "$(chroot_python 'import numpy; print(numpy.get_include())')" \
        "$(in_chroot python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')" \
        "$cache/simplejpeg"
    rm -rf "$root$site"/simplejpeg "$root$site"/simplejpeg-*.dist-info
    cp -r "$cache/simplejpeg/." "$root$site/"
    in_chroot "$venv/bin/python" -c 'import simplejpeg; print("simplejpeg", simplejpeg.__version__)'
}

install_mpicolor() {  # a copy of this checkout (tracked and new files), installed with --no-deps
    rm -rf "$root$checkout"
    mkdir -p "$root$checkout"
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard |
        tar --null --files-from=- --ignore-failed-read -cf - | tar -xf - -C "$root$checkout")
    if ! cmp -s "$repo/setup.cfg" "$root$venv/installed-setup.cfg"; then
        in_chroot "$venv/bin/python" -m pip install --no-deps --no-build-isolation --no-index -e "$checkout"
        cp "$repo/setup.cfg" "$root$venv/installed-setup.cfg"
    fi
}

emulated_demo() {
    rm -rf "$root/root/demo"
    mkdir -p "$root/root/demo"
    cp -r "$cache/demo/input" "$root/root/demo/input"
    in_chroot mpiexec -n 2 mpicolor run /root/demo/input /root/demo/ppc64le --checkpoint-every 10
}

host_checkpoint_read() {  # the host's checkpoint (h5py's HDF5 2.0) read by the distro's HDF5 1.10
    rm -rf "$root/root/demo/x86_64"
    cp -r "$cache/demo/x86_64" "$root/root/demo/x86_64"
    in_chroot mpicolor inspect /root/demo/x86_64
}

compare_palettes() {
    python3 "$repo/run/power/compare.py" "$cache/demo/x86_64" "$root/root/demo/ppc64le" | tee "$cache/palettes.txt"
}

rm -f "$cache/versions.txt" "$cache/host-versions.txt" "$cache/palettes.txt"
step "host: qemu-user, mmdebstrap, ppc64le cross compiler" host_tools
if [ ! -e "$root/.mpicolor-packages" ]; then
    step "chroot: Debian $release ppc64el and its packages (mmdebstrap)" make_chroot
elif [ "$(cat "$root/.mpicolor-packages")" != "${packages[*]}" ]; then
    step "chroot: packages added to the cached one" update_chroot
else
    summary+=("$(printf '%-58s %5s    %s' "chroot: Debian $release ppc64el" - "cached in $root")")
fi
step "host: the demo with PyPI's wheels (x86_64 reference)" host_reference
# the simplejpeg (so the libjpeg-turbo) of the host's demo, rebuilt when that changes
simplejpeg_version="$(awk '$1 == "simplejpeg" {print $2}' "$cache/host-versions.txt")"
if [ "$(cat "$root$venv/installed-simplejpeg" 2>/dev/null)" != "$simplejpeg_version" ]; then
    step "simplejpeg $simplejpeg_version: cross-compiled, into a venv of the chroot" install_simplejpeg
    echo "$simplejpeg_version" >"$root$venv/installed-simplejpeg"
fi
step "mpicolor: copied into the chroot, pip install --no-deps" install_mpicolor
in_chroot python "$checkout/run/power/versions.py" >"$cache/versions.txt" 2>>"$log" || true
step "emulated: numba kernels compiled (or loaded from cache)" \
    in_chroot python -c 'from mpicolor.engine import kernels; kernels.warm_up()' || true
step "emulated: demo, mpiexec -n 2 mpicolor run" emulated_demo || true
step "emulated: pytest -m portable" \
    in_chroot sh -c "cd $checkout && python -m pytest -m portable -q -p no:cacheprovider --timeout=900" || true
step "emulated: inspect reads the host's checkpoint" host_checkpoint_read || true
step "palettes: ppc64le against x86_64" compare_palettes || true
[ "$failed" = 0 ]
