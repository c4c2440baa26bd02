"""What the inventory announces. ``gpus`` knows nothing of who listens.

``inventory_changed`` is sent by ``gpus.services.gpu_scan_run`` once a scan's sync has been
saved (its transaction has ended) and it changed something: GPUs added, lost, returned or
re-indexed. Keyword arguments: ``result``, the ``gpus.services.SyncResult``; ``by_hand``, True
when a person changed the inventory (the admin), in which case it is sent inside the change's
transaction: a receiver that raises refuses the change, and the person sees why.
"""

from django.dispatch import Signal

inventory_changed = Signal()
