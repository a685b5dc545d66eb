import sys

from lipkit.cli import main

sys.exit(main())
