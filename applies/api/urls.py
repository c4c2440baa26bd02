"""Applies room, API routes: the apply, its status and the services' container state."""

from django.urls import path

from applies.api import views

urlpatterns = [
    path("gpu-config/preview", views.PreviewView.as_view(), name="api-gpu-config-preview"),
    path("gpu-config/apply", views.ApplyView.as_view(), name="api-gpu-config-apply"),
    path("gpu-config/status", views.StatusView.as_view(), name="api-gpu-config-status"),
    path("gpu-config/services", views.ServicesView.as_view(), name="api-gpu-config-services"),
]
