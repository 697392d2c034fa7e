#!/bin/sh
# Installs the ONNX Runtime peer for `make bench` into a project-local directory
# (default build/ort, git-ignored): onnxruntime-node from the npm registry.
#
#   sh tools/get_ort.sh [DIR]
#
# ONNXRUNTIME_NODE_INSTALL=skip keeps the package's postinstall script from
# downloading GPU execution-provider binaries (that fails without internet);
# the CPU build of libonnxruntime is inside the npm tarball.  Does nothing when
# DIR/node_modules/onnxruntime-node is already there.  ORT_VERSION=1.30.0 pins the
# version (default: the registry's latest).  Exit status 0 when the
# peer is usable; otherwise the reason is the last line on stderr.
set -u
DIR=${1:-build/ort}
NODE=${NODE:-node}
NPM=${NPM:-npm}

if ! command -v "$NODE" >/dev/null 2>&1; then
    echo "get_ort: node not found ($NODE); install Node.js (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi
if [ -f "$DIR/node_modules/onnxruntime-node/package.json" ]; then
    exit 0
fi
if ! command -v "$NPM" >/dev/null 2>&1; then
    echo "get_ort: npm not found ($NPM); install npm (Debian: apt-get install npm)" >&2
    exit 1
fi
mkdir -p "$DIR" || exit 1
cd "$DIR" || exit 1
[ -f package.json ] || printf '{\n  "name": "env2-bench-ort",\n  "private": true\n}\n' > package.json
PKG=onnxruntime-node${ORT_VERSION:+@$ORT_VERSION}
echo "get_ort: npm install $PKG into $DIR" >&2
if ! ONNXRUNTIME_NODE_INSTALL=skip "$NPM" install --no-audit --no-fund "$PKG" >npm-install.log 2>&1; then
    tail -n 5 npm-install.log >&2
    echo "get_ort: npm install $PKG failed (log: $DIR/npm-install.log)" >&2
    exit 1
fi
if ! "$NODE" -e "require('onnxruntime-node')" >/dev/null 2>npm-load.log; then
    tail -n 3 npm-load.log >&2
    echo "get_ort: onnxruntime-node installed but does not load (see $DIR/npm-load.log)" >&2
    exit 1
fi
echo "get_ort: onnxruntime-node $("$NODE" -p "require('onnxruntime-node/package.json').version") ready in $DIR" >&2
