from django.conf import settings

from gpus.selectors import detection_mode as gpu_detection_mode


def detection_mode(request):
    """Tells every page when the GPUs shown are simulated, so nobody mistakes them for real."""
    return {
        "gpuconfig_simulated": gpu_detection_mode()["simulated"],
        "gpuconfig_embedded": settings.GPUCONFIG_EMBEDDED,
    }
