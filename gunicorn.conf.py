"""gunicorn reads this file from the working directory: ``gunicorn -c gunicorn.conf.py``.

The settings live in the package (``webhooks/gunicorn_conf.py``) so that an installed
rewardrelay can use them too: ``gunicorn -c python:webhooks.gunicorn_conf``.
"""

from webhooks.gunicorn_conf import *  # noqa: F403 - gunicorn reads module-level names
from webhooks.gunicorn_conf import child_exit, on_starting  # noqa: F401 - the hooks, explicitly
