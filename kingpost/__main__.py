import sys

from kingpost.cli import main

sys.exit(main())
