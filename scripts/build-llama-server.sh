#!/usr/bin/env bash
# Builds llama.cpp's own C++ server (llama-server) once, for bench/llm_bench.py's baseline.
#
# The sources are the llama.cpp vendored in llama-cpp-python's sdist (the version the
# engine runs), fetched with pip; the build is portable (AVX2, FMA, F16C; AMX and AVX-512
# off, as scripts/llama-build-env.sh does for the Python package) and runs at the lowest
# priority: about 15 minutes on 2 idle cores, 30 on busy ones. The binary lands outside the
# repository:
#   ${KINGPOST_LLAMA_SERVER_DIR:-~/.cache/kingpost/llama-server}/bin/llama-server
set -euo pipefail
target="${KINGPOST_LLAMA_SERVER_DIR:-$HOME/.cache/kingpost/llama-server}"
if [ -x "$target/bin/llama-server" ]; then
    echo "llama-server is already built: $target/bin/llama-server"
    exit 0
fi
python="${PYTHON:-python3}"
version="$("$python" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work"
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
source_dir="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
# The same CPU flags as the engine's own build (scripts/llama-build-env.sh), so the baseline
# runs the same kernels. Tools on (the server lives there), the web UI and HTTPS off: the
# bench needs neither, and the UI's prebuilt assets are a download this machine may not reach.
nice -n 19 cmake -S "$source_dir" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
    -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF
nice -n 19 cmake --build "$work/build" --target llama-server -j "$(nproc)"
mkdir -p "$target/bin"
cp "$work/build/bin/llama-server" "$target/bin/llama-server"
echo "built $target/bin/llama-server"
