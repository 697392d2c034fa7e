#!/bin/sh
# Makes sure Fashion-MNIST is present in $1 (Debian's dataset-fashion-mnist),
# installing the package when possible, otherwise saying how.
dir=${1:-/usr/share/datasets/fashion-mnist}
if [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -f "$dir/train-images-idx3-ubyte" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Fashion-MNIST not found in $dir: installing Debian's dataset-fashion-mnist"
    (apt-get install -y dataset-fashion-mnist || (apt-get update && apt-get install -y dataset-fashion-mnist)) >/dev/null
    [ -f "$dir/train-images-idx3-ubyte.gz" ] && exit 0
fi
echo "Fashion-MNIST is missing. Install it with:  sudo apt-get install dataset-fashion-mnist" >&2
echo "(or put the four IDX files in a folder and run: make demo FMNIST=/that/folder)" >&2
exit 1
