"""The server's routes, one router per group: ``studio`` (the page and the liveness check), ``videos``
(create, list, retrieve, delete, download), ``edits`` (remix, edit, extend) and ``characters``."""
