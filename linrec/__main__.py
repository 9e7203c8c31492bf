import sys

from linrec.cli import main

sys.exit(main())
