import sys

from datasets.download.run import main

sys.exit(main())
