import sys

from accessd.cli.main import main

sys.exit(main())
