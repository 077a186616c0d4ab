#!/usr/bin/env bash
# Re-fetch the onnxruntime-web files the page needs, at the pinned version, from the npm registry.
#
#   vitedge/web/vendor.sh            the WebAssembly build (SIMD + threads): ~14.4 MB, committed
#   vitedge/web/vendor.sh --webgpu   also the WebGPU build (~27 MB more; not committed, see .gitignore)
#
# Only `npm pack` is used (no node_modules, no build step); the tarball is checked against the
# pinned sha512 before anything is copied, and VERSIONS records the sha256 of every file.
set -euo pipefail

VERSION=1.30.0
INTEGRITY="sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ=="
WASM_FILES="ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm"
WEBGPU_FILES="ort.webgpu.min.mjs ort-wasm-simd-threaded.asyncify.mjs ort-wasm-simd-threaded.asyncify.wasm"

files="$WASM_FILES"
case "${1:-}" in
  --webgpu) files="$WASM_FILES $WEBGPU_FILES" ;;
  "") ;;
  *) echo "usage: $0 [--webgpu]" >&2; exit 2 ;;
esac
command -v npm >/dev/null || { echo "error: npm is needed (apt-get install npm)" >&2; exit 1; }

here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/static/vendor/onnxruntime-web"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "onnxruntime-web@$VERSION" >/dev/null)
tarball="$tmp/onnxruntime-web-$VERSION.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$got" != "$INTEGRITY" ]; then
  echo "error: onnxruntime-web-$VERSION.tgz does not match the pinned integrity ($got)" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$tmp"

mkdir -p "$dest"
if [ "${1:-}" != "--webgpu" ]; then  # back to the committed set
  for f in $WEBGPU_FILES; do rm -f "$dest/$f"; done
fi
{
  echo "onnxruntime-web $VERSION (npm registry; tarball integrity $INTEGRITY)"
  echo "Licence: MIT. The npm package carries no licence file: LICENSE and ThirdPartyNotices.txt beside this"
  echo "file are ONNX Runtime's (the same upstream project), copied from the onnxruntime Python wheel."
  echo "Fetched by vitedge/web/vendor.sh; only the files the page loads are kept:"
  echo
} > "$dest/VERSIONS"
for f in $files; do
  cp "$tmp/package/dist/$f" "$dest/$f"
  (cd "$dest" && sha256sum "$f") >> "$dest/VERSIONS"
done
du -ch $(for f in $files; do echo "$dest/$f"; done) | tail -1
