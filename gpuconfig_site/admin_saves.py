"""Admin pages whose saves go through a service, and what they show when the service refuses.

A refusal found while validating is a form error (each admin form calls the service's
validation). One that can only happen while saving, such as generated files that cannot be
written, is raised inside the admin's transaction: it is rolled back, and the user is taken
back to the page with the reason as an error message instead of a server error.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpResponseRedirect

from gpuconfig_site.errors import ApplicationError
from gpuconfig_site.hosts import host_name


class ServiceSavedAdmin(admin.ModelAdmin):
    def get_queryset(self, request):
        # A per-host model is edited for the host the request works on (the default host, or
        # ``?host=``), the host its save's service works on too: never another host's rows.
        queryset = super().get_queryset(request)
        if any(field.name == "host" for field in self.model._meta.fields):
            queryset = queryset.filter(host=host_name())
        return queryset

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return self._refusal_shown(
            request, super().changeform_view, request, object_id, form_url, extra_context
        )

    def changelist_view(self, request, extra_context=None):
        return self._refusal_shown(request, super().changelist_view, request, extra_context)

    def _refusal_shown(self, request, view, *args):
        try:
            return view(*args)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
