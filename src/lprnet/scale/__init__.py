"""Scaling out: offline batch recognition over many files with Ray Data, and the HTTP service on Ray Serve.

This package owns the distributed faces of the recognizer (the single-process ones live in
:mod:`lprnet.recognizer`, :mod:`lprnet.cli` and :mod:`lprnet.serve`):

* :mod:`lprnet.scale.ray_batch` -- ``lprnet batch``: a folder or manifest of crops is read
  by Ray Data tasks, recognized by a pool of actors that each hold one
  :class:`~lprnet.recognizer.Recognizer`, and written as one Parquet or CSV file with a
  ``path, plate, confidence, error`` row per input.  A file that cannot be read becomes a
  row with ``error`` set; it never stops the job.
* :mod:`lprnet.scale.ray_serve` -- ``lprnet serve --ray``: the service of :mod:`lprnet.serve` as a Ray Serve
  application, one copy of the app (and of the model) per replica behind Ray Serve's HTTP proxy.

Ray (``pip install 'lprnet[scale]'``) is imported only when a job runs.
"""
