import sys

from gru4rec.cli import main

sys.exit(main())
