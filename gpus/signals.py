"""What the inventory announces. ``gpus`` knows nothing of who listens.

``inventory_changed`` is sent by ``gpus.services.gpu_scan_run`` once a scan's sync has been
saved (its transaction has ended) and it changed something: GPUs added, lost, returned or
re-indexed. Keyword argument: ``result``, the ``gpus.services.SyncResult``.
"""

from django.dispatch import Signal

inventory_changed = Signal()
