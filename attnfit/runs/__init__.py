"""Run bookkeeping: how a run ended (``status.json``, :mod:`~attnfit.runs.status`), the sweep report over many runs
(``attnfit-report``, :mod:`~attnfit.runs.report`) and hyper-parameter search (``attnfit-search``,
:mod:`~attnfit.runs.search`)."""
