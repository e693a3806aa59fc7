#!/usr/bin/env python3
"""torchrun, with the one fix Debian 12's torch 1.13 needs under Python 3.11.

torch 1.13's `Std.from_str` looks a number up by iterating the `Std` IntFlag; since Python 3.11 that
iteration leaves out the zero and multi-bit members, so the default `--redirects 0` and `--tee 0`
become None and torchrun fails before starting a worker ("'NoneType' object has no attribute
'get'"). Fixed upstream in later torch releases. Everything else is torch's own launcher,
unchanged: `python3 bench/torchrun_py311.py --standalone --nproc_per_node 4 main.py`."""

import re
import sys

from torch.distributed.elastic.multiprocessing import api

_from_str = api.Std.from_str


def from_str(vm):
    if re.match(api._VALUE_REGEX, vm):
        return api.Std(int(vm))
    return _from_str(vm)


api.Std.from_str = staticmethod(from_str)

from torch.distributed.run import main  # noqa: E402  (after the fix it needs)

sys.exit(main())
