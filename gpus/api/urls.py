from django.urls import path

from gpus.api import views

urlpatterns = [
    path("gpus", views.GpuListView.as_view(), name="api-gpus"),
    path("gpus/history", views.GpuHistoryView.as_view(), name="api-gpus-history"),
    path("gpu/history", views.GpuSampleHistoryView.as_view(), name="api-gpu-history"),
    path("gpu-config/detect", views.DetectView.as_view(), name="api-gpu-detect"),
]
