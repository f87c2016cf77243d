import sys

from manualnet.cli import main

sys.exit(main())
