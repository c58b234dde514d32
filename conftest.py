"""pytest settings for the whole repository, nbval's notebook kernels included.

`make test` runs two test processes side by side (``pytest -n 2``) on a two-core laptop,
and each notebook kernel is a process of its own. If every kernel's torch also used every
core, the threads would fight over two cores and small matrix products would stall (they
did: lesson 01's timings once came out backwards). One thread per process is also faster
overall here. Set OMP_NUM_THREADS yourself to override it.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # read by torch when a process (or kernel) starts
os.environ.setdefault("MKL_NUM_THREADS", "1")

# nbval waits this long for each output message of a cell that has finished. Its own
# default, 5 s, can pass on a loaded machine between two messages; 60 s cannot.
NBVAL_OUTPUT_TIMEOUT = 60


def pytest_collection_modifyitems(items):
    for item in items:
        if type(item).__name__ == "IPyNbCell":  # a notebook cell collected by nbval
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT
