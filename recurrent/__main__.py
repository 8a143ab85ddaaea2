import sys

from recurrent.cli.main import main

sys.exit(main())
