"""Root URLs: the API at the top level, its schema and docs, and Django's admin."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from api.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("metrics", metrics_view, name="metrics"),
    path("", include("api.urls")),
]

handler400 = "api.exceptions.handler400"
handler403 = "api.exceptions.handler403"
handler404 = "api.exceptions.handler404"
handler500 = "api.exceptions.handler500"
