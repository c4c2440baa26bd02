from django.conf import settings


def detection_mode(request):
    """Tells every page when the GPUs shown are simulated, so nobody mistakes them for real."""
    simulated = (
        bool(settings.GPUCONFIG_SIMULATED_GPUS) or settings.GPUCONFIG_GPU_BACKEND == "simulated"
    )
    return {"gpuconfig_simulated": simulated, "gpuconfig_embedded": settings.GPUCONFIG_EMBEDDED}
