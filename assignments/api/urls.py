"""Assignments room, API routes (under ``/api/system/``)."""

from django.urls import path

from assignments.api import views

urlpatterns = [
    path("gpu-config", views.GpuConfigView.as_view(), name="api-gpu-config"),
    path("gpu-config/compose", views.ComposeView.as_view(), name="api-gpu-config-compose"),
    path("gpu-config/lint", views.LintView.as_view(), name="api-gpu-config-lint"),
    path("gpu-config/rules", views.RulesView.as_view(), name="api-gpu-config-rules"),
    path("gpu-config/versions", views.VersionsView.as_view(), name="api-gpu-config-versions"),
    path(
        "gpu-config/versions/<int:a>/diff/<int:b>",
        views.VersionDiffView.as_view(),
        name="api-gpu-config-versions-diff",
    ),
    path(
        "gpu-config/versions/<int:version_id>/restore",
        views.VersionRestoreView.as_view(),
        name="api-gpu-config-versions-restore",
    ),
    path("gpu-config/export", views.ExportView.as_view(), name="api-gpu-config-export"),
    path("gpu-config/import", views.ImportView.as_view(), name="api-gpu-config-import"),
    path("ai-services", views.AiServicesView.as_view(), name="api-ai-services"),
]
