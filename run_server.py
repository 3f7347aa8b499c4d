"""Start the talking-portrait server: ``python run_server.py [--host H] [--port P] [--config FILE]
[--engine parametric|emo] [--avatar PATH] [--set section.key=value ...]``."""

import sys

from server.main import main

if __name__ == "__main__":
    sys.exit(main())
