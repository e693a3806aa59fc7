"""Makes cifar-10/, the local folder the notebook uploads as a file dataset (cells 14 and 16), with
the empty cifar-10-batches-py/ folder the CIFAR-10 archive unpacks to.

The run is refused before it starts (distributed runs are still to come), so train.py never reads
it; it exists because amlnode checks an input's path when it loads the job. Real CIFAR-10 batches
could not be synthesized anyway: torchvision checks their md5 sums.
"""
import os

os.makedirs("cifar-10/cifar-10-batches-py", exist_ok=True)
