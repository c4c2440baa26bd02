"""Front room: the settings page's routes (under ``/settings/``)."""

from django.urls import path

from front import compose_views, fleet_views, rules_views, views

urlpatterns = [
    path("", views.settings_index, name="settings"),
    path("gpu/", views.gpu_settings, name="settings-gpu"),
    path("fleet/", fleet_views.fleet_overview, name="settings-fleet"),
    path("gpu/cards/", views.gpu_cards, name="settings-gpu-cards"),
    path("gpu/rescan/", views.gpu_rescan, name="settings-gpu-rescan"),
    path("gpu/preview/", views.config_preview, name="settings-gpu-preview"),
    path("gpu/assignments/", views.config_assignments, name="settings-gpu-assignments"),
    path("gpu/check/", views.config_check, name="settings-gpu-check"),
    path("gpu/save/", views.config_save_view, name="settings-gpu-save"),
    path("gpu/apply/", views.apply_view, name="settings-gpu-apply"),
    path("gpu/apply/progress/", views.apply_progress, name="settings-gpu-apply-progress"),
    path("gpu/services/", views.services_view, name="settings-gpu-services"),
    path("gpu/demo-runtime/", views.demo_runtime_view, name="settings-gpu-demo-runtime"),
    path("gpu/compose/", compose_views.compose_panel, name="settings-gpu-compose"),
    path("gpu/compose/add/", compose_views.compose_service_add, name="settings-gpu-compose-add"),
    path("gpu/history/", views.history_view, name="settings-gpu-history"),
    path("gpu/rules/", rules_views.rules_panel, name="settings-gpu-rules"),
    path("gpu/versions/", rules_views.versions_panel, name="settings-gpu-versions"),
    path(
        "gpu/versions/<int:version_id>/restore/",
        rules_views.version_restore_view,
        name="settings-gpu-version-restore",
    ),
    path("gpu/import/", rules_views.config_import_view, name="settings-gpu-import"),
]
