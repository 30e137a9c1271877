"""The product's urls plus the naive purchase endpoint (baseline of the benchmark)."""

from django.urls import include, path

from loadtests.naive.views import NaivePurchaseApi

urlpatterns = [
    path(
        "naive/events/<int:event_id>/purchase/", NaivePurchaseApi.as_view(), name="naive-purchase"
    ),
    path("", include("core.urls")),
]
