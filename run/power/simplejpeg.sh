#!/usr/bin/env bash
# Builds simplejpeg for ppc64le: bash simplejpeg.sh VERSION PYTHON_INCLUDE NUMPY_INCLUDE EXT_SUFFIX OUT_DIR
# Debian packages no simplejpeg and PyPI has no ppc64le wheel; built inside the emulated chroot it takes 18
# minutes, cross-compiled on an amd64 host (Debian's gcc-powerpc64le-linux-gnu and its libc) under a minute;
# on a Power machine CC=gcc builds it natively. PYTHON_INCLUDE and NUMPY_INCLUDE are the target Python's
# header folders (in the chroot). OUT_DIR gets the package folder (simplejpeg/, with the extension) and its
# .dist-info, to copy into a site-packages folder.
set -euo pipefail
version="$1" python_include="$2" numpy_include="$3" ext_suffix="$4" out="$5"
compiler="${CC:-powerpc64le-linux-gnu-gcc}"
work="$(dirname "$out")/simplejpeg-$version-build"
rm -rf "$work" "$out"
mkdir -p "$work" "$out"

# the sdist from the package index pip uses, checked against the index's sha256 (`pip download` cannot
# fetch it: preparing its metadata runs setup.py, which downloads libjpeg-turbo from GitHub)
python3 - "$version" "$work" <<'PY'
import hashlib, os, re, sys, urllib.parse, urllib.request
version, work = sys.argv[1:]
index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
page = urllib.request.urlopen(f"{index}/simplejpeg/").read().decode()
found = re.search(rf'href="([^"#]*simplejpeg-{re.escape(version)}\.tar\.gz)#sha256=([0-9a-f]+)"', page)
if found is None:
    sys.exit(f"simplejpeg-{version}.tar.gz is not in {index}/simplejpeg/")
url, sha256 = found.groups()
sdist = urllib.request.urlopen(urllib.parse.urljoin(f"{index}/simplejpeg/", url)).read()
if hashlib.sha256(sdist).hexdigest() != sha256:
    sys.exit(f"{url}: sha256 {hashlib.sha256(sdist).hexdigest()} is not the index's {sha256}")
with open(os.path.join(work, "sdist.tar.gz"), "wb") as stream:
    stream.write(sdist)
PY
tar -xzf "$work/sdist.tar.gz" -C "$work"
source_dir="$work/simplejpeg-$version"
libjpeg_turbo=("$source_dir"/lib/libjpeg-turbo-*/)

# the bundled libjpeg-turbo, its TurboJPEG static library only, with Power's AltiVec SIMD as setup.py builds
# it (without LTO, the tools and the tests)
cmake -S "${libjpeg_turbo[0]}" -B "$work/libjpeg-turbo" -Wno-dev -DCMAKE_SYSTEM_NAME=Linux \
    -DCMAKE_SYSTEM_PROCESSOR=ppc64le -DCMAKE_C_COMPILER="$compiler" \
    -DCMAKE_BUILD_TYPE=Release -DENABLE_SHARED=0 -DREQUIRE_SIMD=1 -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
    -DWITH_TOOLS=0 -DWITH_TESTS=0 >"$work/cmake.log"
cmake --build "$work/libjpeg-turbo" --target turbojpeg-static -j "$(nproc)" >>"$work/cmake.log"

# the Cython-generated extension, with setup.py's macros and link options; Debian's pyconfig.h is found from
# the folder above PYTHON_INCLUDE, after the compiler's own libc headers
mkdir -p "$out/simplejpeg"
"$compiler" -shared -fPIC -O2 -I"$python_include" -idirafter "$(dirname "$python_include")" -I"$numpy_include" \
    -I"${libjpeg_turbo[0]}src" -I"$work/libjpeg-turbo" -I"$source_dir/simplejpeg" \
    -DNPY_NO_DEPRECATED_API=NPY_1_19_API_VERSION -DNPY_TARGET_VERSION=NPY_1_19_API_VERSION \
    "$source_dir/simplejpeg/_jpeg.c" "$source_dir/simplejpeg/_color.c" "$work/libjpeg-turbo/libturbojpeg.a" \
    -Wl,--strip-all,--exclude-libs,ALL,--gc-sections -o "$out/simplejpeg/_jpeg$ext_suffix"
cp "$source_dir/simplejpeg/__init__.py" "$source_dir/simplejpeg/_jpeg.pyi" "$out/simplejpeg/"
info="$out/simplejpeg-$version.dist-info"
mkdir -p "$info"
cp "$source_dir/PKG-INFO" "$info/METADATA"
echo "mpicolor run/power-check.sh (cross-compiled)" >"$info/INSTALLER"
(cd "$out" && find simplejpeg "$(basename "$info")" -type f -printf '%p,,\n' && echo "$(basename "$info")/RECORD,,") \
    >"$info/RECORD"
rm -rf "$work"
