"""``init_*_wf`` factories and the participant and group levels."""

import os

# Nipype asks a server for newer versions when imported (etelemetry): never from a cluster node.
os.environ.setdefault('NIPYPE_NO_ET', '1')
