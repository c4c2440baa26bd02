from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from ops import views as ops_views

admin.site.site_header = "gpuconfig administration"
admin.site.site_title = "gpuconfig admin"
admin.site.index_title = "GPUs, services and their assignments"

api_patterns = [
    path("", include("gpus.api.urls")),
    path("", include("fleet.api.urls")),
    path("", include("assignments.api.urls")),
    path("", include("applies.api.urls")),
]

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="settings-gpu", permanent=False)),
    path("settings/", include("front.page_urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/system/", include(api_patterns)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("healthz", ops_views.healthz, name="healthz"),
    path("readyz", ops_views.readyz, name="readyz"),
    path("metrics", ops_views.metrics, name="metrics"),
    # The docs page is for a browser: signed out, it is sent to log in (and back), not answered
    # with the API's JSON refusal.
    path("api/docs/", ops_views.ApiDocsView.as_view(url_name="schema"), name="api-docs"),
]
