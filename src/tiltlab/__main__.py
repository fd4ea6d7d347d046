import sys

from tiltlab.cli import main

sys.exit(main())
