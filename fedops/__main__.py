import sys

from fedops.cli import main

sys.exit(main())
