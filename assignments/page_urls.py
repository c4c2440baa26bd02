from django.urls import path

from assignments import views

urlpatterns = [
    path("", views.settings_index, name="settings"),
    path("gpu/", views.gpu_settings, name="settings-gpu"),
]
