"""Helper modules and scripts that tests import or run in subprocesses."""
