import sys

from convnet.cli import main

sys.exit(main())
