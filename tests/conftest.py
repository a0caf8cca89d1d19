"""Test-session settings: one PyTorch / OpenMP thread per process.

The suite starts servers and subprocesses beside itself on a 2-core machine; several processes each spinning two
OpenMP threads slow small tensor operations by orders of magnitude. Child processes inherit OMP_NUM_THREADS.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("M2N2_TORCH_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
