from django.urls import path

from fleet.api import views

urlpatterns = [
    path("hosts", views.HostListView.as_view(), name="api-hosts"),
]
