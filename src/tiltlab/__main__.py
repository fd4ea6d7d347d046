import sys

from tiltlab.app.cli import main

sys.exit(main())
