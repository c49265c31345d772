import sys

from kingpost.cli import main

# Guarded so that multiprocessing's spawn (vLLM's engine processes) can import this
# module as __mp_main__ without starting a second server.
if __name__ == "__main__":
    sys.exit(main())
