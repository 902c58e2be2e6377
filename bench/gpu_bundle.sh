#!/usr/bin/env bash
# Packs, here, what bench/gpu_session.sh needs on a GPU machine that has CUDA's
# driver and compiler but none of the project's C libraries and no way to
# fetch them: the binaries built here for the GPU (stripped; the command line,
# the tests and bench_decode_seqs), every shared
# library they load except glibc's own, and the k2-tiny test vectors (which do
# not travel with the working tree). The result, .device/bundle.tar.xz (about
# 40 MB; .device/ is ignored by git), goes along by naming .device in the
# device tool's carry; gpu_session.sh unpacks and uses it instead of building.
# The binaries need a glibc at least as new as this machine's. libstdc++ and
# libgcc_s go apart, in lib-cxx/: this machine's may need a newer glibc than
# the device's, so the device's own serve first and these only where it has
# none.
set -euo pipefail
cd "$(dirname "$0")/.."
testdata=${MOETIER_TESTDATA:-$PWD/../shared/testdata}
make -j"$(nproc)" build/moetier build/tests/unit_tests build/bench/bench_decode_seqs
nm build/moetier | grep -c cudaGetDeviceCount >/dev/null ||
    { echo "gpu_bundle: this build has no CUDA backend (nvcc not found?)" >&2; exit 1; }
stage=.device/stage
rm -rf .device
mkdir -p "$stage/bin" "$stage/lib" "$stage/lib-cxx" "$stage/testdata"
cp build/moetier build/tests/unit_tests build/bench/bench_decode_seqs "$stage/bin/"
strip "$stage/bin/"*
# glibc's libraries stay behind: the machine's own must serve its loader
ldd build/moetier build/tests/unit_tests build/bench/bench_decode_seqs | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
    grep -v -E '/(libc|libm|libdl|libpthread|librt|libresolv|libutil|ld-linux[^/]*)\.so' |
    while read -r lib; do
        case $(basename "$lib") in
        libstdc++.so* | libgcc_s.so*) cp -L "$lib" "$stage/lib-cxx/" ;;
        *) cp -L "$lib" "$stage/lib/" ;;
        esac
    done
for d in "$testdata"/k2-tiny-*; do
    [[ -d $d ]] && cp -r "$d" "$stage/testdata/"
done
ls "$stage/testdata" | grep -q k2-tiny ||
    echo "gpu_bundle: no k2-tiny vectors in $testdata: the golden GPU tests will skip" >&2
tar -C "$stage" -cJf .device/bundle.tar.xz .
rm -rf "$stage"
du -h .device/bundle.tar.xz
