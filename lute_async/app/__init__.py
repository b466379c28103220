"""What the ``lute-async`` command and the demo share: running jobs under an executor with
Ctrl-C handling (:mod:`lute_async.app.supervise`)."""
