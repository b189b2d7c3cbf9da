"""A deployment's log: the rotating file its replicas write (logfile) and the records read back
from it as JSON lines (logrecords)."""
