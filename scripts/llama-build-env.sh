# Sourced before `pip install` of the llama extra (the README's first command and .ci/run do):
# makes the llama-cpp-python build portable, so it runs on any x86-64 machine with AVX2.
#
# llama.cpp's default build is native (-march=native). On a VM that advertises AMX without
# letting processes use it, a native build dies with SIGILL on the first generation, and a
# native wheel reused from pip's cache on an older CPU does the same. This build targets
# AVX2, FMA and F16C with AMX and AVX-512 off; bench/llama_builds.py measures what that costs.
#
# KINGPOST_LLAMA_NATIVE=1 keeps llama.cpp's native build instead; a CMAKE_ARGS you set
# yourself is left as it is.
if [ -z "${CMAKE_ARGS:-}" ] && [ "${KINGPOST_LLAMA_NATIVE:-0}" != "1" ] && [ "$(uname -m)" = "x86_64" ]; then
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
fi
