import sys

from manualnet.cli.main import main

sys.exit(main())
