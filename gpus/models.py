"""The GPU inventory: what the machine has, as the last scans saw it."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from gpuconfig_site.hosts import HostScopedManager, host_field
from gpus.units import MB_PER_GB


class Gpu(models.Model):
    """One NVIDIA GPU, identified by its UUID. Kept when it disappears (``available`` False)."""

    host = host_field()
    uuid = models.CharField("UUID", max_length=96)
    index = models.PositiveSmallIntegerField(help_text="Index at the last scan that saw it.")
    name = models.CharField(max_length=200)
    pci_bus_id = models.CharField("PCI bus ID", max_length=32, blank=True)
    vram_total_mb = models.PositiveIntegerField("VRAM total (MB)", null=True, blank=True)
    vram_used_mb = models.PositiveIntegerField("VRAM used (MB)", null=True, blank=True)
    processes_used_mb = models.PositiveIntegerField(
        "VRAM used by processes (MB)",
        null=True,
        blank=True,
        help_text="VRAM held by running compute processes.",
    )
    compute_capability_major = models.PositiveSmallIntegerField(
        "compute capability (major)", null=True, blank=True
    )
    compute_capability_minor = models.PositiveSmallIntegerField(
        "compute capability (minor)", null=True, blank=True
    )
    utilization_percent = models.PositiveSmallIntegerField("utilisation (%)", null=True, blank=True)
    temperature_c = models.SmallIntegerField("temperature (°C)", null=True, blank=True)
    power_w = models.FloatField("power (W)", null=True, blank=True)
    available = models.BooleanField(
        default=True, help_text="Seen by the last scan; a lost GPU is kept, unavailable."
    )
    last_seen = models.DateTimeField("last seen", null=True, blank=True)
    backend = models.CharField(max_length=32, blank=True, help_text="Backend of the last scan.")
    updated_at = models.DateTimeField("updated", auto_now=True)

    all_hosts = models.Manager()
    objects = HostScopedManager()

    class Meta:
        ordering = ["-available", "index", "uuid"]
        default_manager_name = "all_hosts"
        constraints = [
            models.UniqueConstraint(fields=["host", "uuid"], name="gpu_unique_host_uuid"),
            # Two present GPUs of a host never share an index; a lost one may keep its old one.
            models.UniqueConstraint(
                fields=["host", "index"],
                condition=Q(available=True),
                name="gpu_unique_available_index",
            ),
            models.CheckConstraint(
                condition=Q(utilization_percent__isnull=True) | Q(utilization_percent__lte=100),
                name="gpu_utilization_percent_range",
            ),
        ]
        verbose_name = "GPU"
        verbose_name_plural = "GPUs"

    def __str__(self) -> str:
        return f"GPU {self.index}: {self.name}"

    @property
    def compute_capability(self) -> str | None:
        if self.compute_capability_major is None:
            return None
        return f"{self.compute_capability_major}.{self.compute_capability_minor or 0}"

    @property
    def vram_total_gb(self) -> float | None:
        return None if self.vram_total_mb is None else self.vram_total_mb / MB_PER_GB

    @property
    def vram_used_fraction(self) -> float:
        if not self.vram_total_mb or self.vram_used_mb is None:
            return 0.0
        return min(self.vram_used_mb / self.vram_total_mb, 1.0)


class GpuScopedManager(HostScopedManager):
    """Rows of the GPUs on the host at hand."""

    through = "gpu"


class GpuSample(models.Model):
    """A utilisation/VRAM reading of one GPU at one scan, kept for a bounded time for charts."""

    gpu = models.ForeignKey(
        Gpu, on_delete=models.CASCADE, related_name="samples", verbose_name="GPU"
    )
    taken_at = models.DateTimeField("taken", db_index=True)
    utilization_percent = models.PositiveSmallIntegerField("utilisation (%)", null=True, blank=True)
    vram_used_mb = models.PositiveIntegerField("VRAM used (MB)", null=True, blank=True)

    all_hosts = models.Manager()
    objects = GpuScopedManager()

    class Meta:
        default_manager_name = "all_hosts"
        ordering = ["gpu", "taken_at"]
        indexes = [models.Index(fields=["gpu", "taken_at"], name="gpusample_gpu_time")]
        verbose_name = "GPU sample"

    def __str__(self) -> str:
        return f"{self.gpu} @ {self.taken_at:%H:%M:%S}"


class GpuProcess(models.Model):
    """A process holding memory on a GPU at the last scan, attributed to its container and,
    when gpuconfig manages that container, its service. Replaced by every scan of the GPU."""

    class Kind(models.TextChoices):
        COMPUTE = "compute", "compute"
        GRAPHICS = "graphics", "graphics"

    gpu = models.ForeignKey(
        Gpu, on_delete=models.CASCADE, related_name="processes", verbose_name="GPU"
    )
    pid = models.PositiveIntegerField("PID", help_text="Host PID, as NVML reports it.")
    name = models.CharField(max_length=64, blank=True, help_text="/proc/<pid>/comm")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.COMPUTE)
    used_mb = models.PositiveIntegerField("VRAM used (MB)")
    container_id = models.CharField(max_length=64, blank=True)
    container_name = models.CharField(max_length=255, blank=True)
    service = models.CharField(
        max_length=64, blank=True, help_text="The managed service; empty for other processes."
    )
    resolved = models.BooleanField(
        default=True, help_text="False when /proc/<pid> could not be read (no host PIDs)."
    )
    seen_at = models.DateTimeField("seen")

    all_hosts = models.Manager()
    objects = GpuScopedManager()

    class Meta:
        default_manager_name = "all_hosts"
        ordering = ["gpu", "-used_mb", "pid"]
        constraints = [
            models.UniqueConstraint(fields=["gpu", "pid"], name="gpuprocess_unique_gpu_pid")
        ]
        verbose_name = "GPU process"

    def __str__(self) -> str:
        return f"{self.name or 'pid'} {self.pid} on {self.gpu}: {self.used_mb} MB"


class ServiceVramSample(models.Model):
    """The VRAM one managed service held on one GPU at one scan (its processes summed).

    Kept ``GPUCONFIG_VRAM_WINDOW`` seconds (or the sample retention, when longer) for the
    service's now / peak / p95 figures. Services are named, not linked: the inventory knows
    nothing of the catalog.
    """

    host = host_field()
    service = models.CharField(max_length=64)
    gpu_uuid = models.CharField("GPU UUID", max_length=96)
    used_mb = models.PositiveIntegerField("VRAM used (MB)")
    taken_at = models.DateTimeField("taken", db_index=True)

    all_hosts = models.Manager()
    objects = HostScopedManager()

    class Meta:
        default_manager_name = "all_hosts"
        ordering = ["service", "taken_at"]
        indexes = [models.Index(fields=["service", "taken_at"], name="servicevram_service_time")]
        verbose_name = "service VRAM sample"

    def __str__(self) -> str:
        return f"{self.service} on {self.gpu_uuid} @ {self.taken_at:%H:%M:%S}: {self.used_mb} MB"
